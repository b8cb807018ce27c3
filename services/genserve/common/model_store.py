"""The model store: weight files under one folder and `manifest.json` describing each.

Each manifest entry says what a file is (name, version, family, architecture), how to trust it
(sha256), where it came from (data source or source package, training or conversion command)
and how good it is (`metrics`). Services look models up here and nowhere else.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genserve.common.packages import sha256_of

MANIFEST = "manifest.json"


class ModelStoreError(RuntimeError):
    """A model is missing, altered or described wrongly."""


@dataclass
class ModelEntry:
    name: str
    version: str
    family: str  # "text" | "vision" | "latent"
    architecture: str
    file: str  # relative to the store root
    sha256: str
    parameter_count: int
    data_source: str
    command: str  # how the file was produced (training or conversion command)
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def entries(self) -> dict[str, ModelEntry]:
        if not self.manifest_path.exists():
            return {}
        raw = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        return {item["name"]: ModelEntry(**item) for item in raw.get("models", [])}

    def entries_of(self, family: str) -> list[ModelEntry]:
        return [e for e in self.entries().values() if e.family == family]

    def path_of(self, entry: ModelEntry) -> Path:
        return self.root / entry.file

    def verified_path(self, entry: ModelEntry) -> Path:
        """The weight file of `entry`, after checking it exists and matches its sha256."""
        path = self.path_of(entry)
        if not path.exists():
            raise ModelStoreError(f"model {entry.name!r}: weight file {path} is missing")
        actual = sha256_of(path)
        if actual != entry.sha256:
            raise ModelStoreError(f"model {entry.name!r}: {path} has sha256 {actual}, manifest says {entry.sha256}")
        return path

    def register(self, entry: ModelEntry) -> None:
        """Add or replace an entry; the manifest is rewritten atomically, sorted by name."""
        entries = self.entries()
        entries[entry.name] = entry
        payload = {
            "format": 1,
            "models": [entries[name].to_json() for name in sorted(entries)],
        }
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".manifest.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, self.manifest_path)
