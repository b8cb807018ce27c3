"""The model store: weight files under one folder and `manifest.json` describing each.

Each manifest entry says what a file is (name, version, family, architecture), how to trust it
(sha256), where it came from (data source or source package, training or conversion command)
and how good it is (`metrics`). Services look models up here and nowhere else.

Every service chooses what to load the same way, with `ModelStore.select`:
- GENSERVE_<FAMILY>_MODELS names the models to load (comma-separated); empty = every model of
  the family in the manifest.
- The default model (used when a request names none) is GENSERVE_<FAMILY>_DEFAULT_MODEL when
  set; otherwise the first model GENSERVE_<FAMILY>_MODELS names; when both are empty, the
  family's default in the manifest (`defaults`).
A name that is not in the store, or a default that is not loaded, is a ModelStoreError whose
message names the variable and what it may hold.
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
    """A model is missing, altered or described wrongly, or a setting names one that is not there."""


@dataclass(frozen=True)
class Selection:
    """The models a service loads, in the order named, and the one requests get by default."""

    entries: tuple[ModelEntry, ...]
    default: str

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]


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

    def _manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {}
        manifest: dict[str, Any] = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        return manifest

    def entries(self) -> dict[str, ModelEntry]:
        return {item["name"]: ModelEntry(**item) for item in self._manifest().get("models", [])}

    def family_defaults(self) -> dict[str, str]:
        """Each family's default model when no setting names one (the manifest's `defaults`)."""
        return dict(self._manifest().get("defaults", {}))

    def select(self, family: str, models: str, default_model: str) -> Selection:
        """The entries of `family` to load and the default, by the rule in this module's docstring.

        models, default_model: the values of GENSERVE_<FAMILY>_MODELS and _DEFAULT_MODEL.
        """
        variable = f"GENSERVE_{family.upper()}"
        available = {entry.name: entry for entry in self.entries_of(family)}
        known = ", ".join(sorted(available)) or "none"
        wanted = [name.strip() for name in models.split(",") if name.strip()]
        missing = [name for name in wanted if name not in available]
        if missing:
            raise ModelStoreError(
                f"{variable}_MODELS names {', '.join(repr(n) for n in missing)}, not {family} models in "
                f"{self.manifest_path}; it may name: {known} (empty = all)"
            )
        if not available:
            raise ModelStoreError(f"no {family} models in {self.manifest_path}; see `genserve models list`")
        names = list(dict.fromkeys(wanted)) or sorted(available)
        if default_model:
            if default_model not in names:
                raise ModelStoreError(
                    f"{variable}_DEFAULT_MODEL={default_model!r} is not a loaded {family} model; it may name: "
                    f"{', '.join(names)} (empty = the first of {variable}_MODELS, else the store's default)"
                )
            default = default_model
        elif wanted:
            default = wanted[0]
        else:
            default = self.family_defaults().get(family, "")
            if default not in names:
                raise ModelStoreError(
                    f"{self.manifest_path} names {default!r} as the default {family} model, which it does not hold; "
                    f"set {variable}_DEFAULT_MODEL to one of: {known}"
                )
        return Selection(tuple(available[name] for name in names), default)

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
            "defaults": self.family_defaults(),
            "models": [entries[name].to_json() for name in sorted(entries)],
        }
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".manifest.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, self.manifest_path)
