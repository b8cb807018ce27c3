"""Dependencies point one way, and torch stays where the models are.

Each rule imports a set of genserve modules in a fresh interpreter and inspects `sys.modules`:
- a model family (text, vision, latent) imports `common` (and the generated `v1`) and nothing
  else of genserve;
- `common` imports nothing else of genserve;
- `jobs` may use vision's style engine, nothing else;
- the TorchServe handler, exporter and launcher (`torchserve`) use the text and latent families,
  `common` and TorchServe's generated API, nothing else (they serve those models with the
  services' own code);
- the gateway imports `common`, the job queue's gRPC face and TorchServe's generated API
  (`tsapi`, for a family served by TorchServe) only, and never torch;
- the text service's gRPC side never imports torch (only its decode process does);
- the client library imports `common` only, and never torch;
- the HTTP front door imports the client library and `common` only (it reaches the models
  through the gateway), and never torch.
A process-level check backs the last rules with a real gateway process (and tests/http with a
real http role).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import start_role

PACKAGE = Path(__file__).resolve().parents[1] / "services" / "genserve"
ALWAYS = ("genserve.v1",)  # the generated protobuf modules (the package's own __init__ is always allowed)
# What the gateway may use of the job system: the gRPC servicer and the Redis queue it drives.
JOB_QUEUE_FACE = ("genserve.jobs.servicer", "genserve.jobs.queue", "genserve.jobs.records", "genserve.jobs.scripts")
TEXT_GRPC_SIDE = ("role", "servicer", "generator", "decode_client", "protocol")


def modules_of(package: str) -> list[str]:
    """Every module of genserve.<package>, by dotted name."""
    root = PACKAGE / package.replace(".", "/")
    return sorted(
        "genserve." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        for path in root.rglob("*.py")
    )


def imported_by(modules: list[str]) -> set[str]:
    """The names in sys.modules of a fresh interpreter after importing `modules`."""
    script = "import importlib, json, sys\n"
    script += f"for name in {modules!r}:\n    importlib.import_module(name)\n"
    script += "print(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads(result.stdout.splitlines()[-1]))


def genserve_outside(loaded: set[str], allowed: tuple[str, ...]) -> list[str]:
    """Loaded genserve modules that are neither in, under, nor a parent package of one of `allowed`."""
    prefixes = (*ALWAYS, *allowed)

    def permitted(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") or p.startswith(name + ".") for p in prefixes)

    return sorted(name for name in loaded if name.startswith("genserve.") and not permitted(name))


@pytest.mark.parametrize("family", ["text", "vision", "latent"])
def test_a_model_family_imports_only_common(family: str) -> None:
    loaded = imported_by(modules_of(family))
    assert genserve_outside(loaded, ("genserve.common", f"genserve.{family}")) == []


def test_common_imports_nothing_else_of_genserve() -> None:
    assert genserve_outside(imported_by(modules_of("common")), ("genserve.common",)) == []


def test_jobs_use_only_common_and_the_vision_engine() -> None:
    loaded = imported_by(modules_of("jobs"))
    assert genserve_outside(loaded, ("genserve.common", "genserve.jobs", "genserve.vision")) == []


def test_the_torchserve_handler_uses_only_the_text_and_latent_families_and_common() -> None:
    loaded = imported_by(modules_of("torchserve"))
    assert {"genserve.text.engine", "genserve.latent.operations"} <= loaded
    allowed = ("genserve.common", "genserve.text", "genserve.latent", "genserve.torchserve", "genserve.tsapi")
    assert genserve_outside(loaded, allowed) == []


def test_the_gateway_imports_common_and_the_job_queue_only_and_never_torch() -> None:
    loaded = imported_by(modules_of("gateway"))
    allowed = ("genserve.common", "genserve.gateway", "genserve.tsapi", *JOB_QUEUE_FACE)
    assert genserve_outside(loaded, allowed) == []
    assert "torch" not in loaded


def test_the_text_service_grpc_side_never_imports_torch() -> None:
    loaded = imported_by([f"genserve.text.{name}" for name in TEXT_GRPC_SIDE])
    assert "torch" not in loaded
    assert "genserve.text.engine" not in loaded and "genserve.text.decode_process" not in loaded


def test_the_client_imports_only_common_and_never_torch() -> None:
    loaded = imported_by(modules_of("client"))
    assert genserve_outside(loaded, ("genserve.common", "genserve.client")) == []
    assert "torch" not in loaded


def test_the_http_role_imports_only_the_client_and_common_and_never_torch() -> None:
    loaded = imported_by(modules_of("http"))
    assert genserve_outside(loaded, ("genserve.common", "genserve.client", "genserve.http")) == []
    assert "torch" not in loaded


def test_the_rules_see_a_violation() -> None:
    """The checks above would fail: importing a family's torch modules shows torch and the family."""
    loaded = imported_by(["genserve.jobs.worker"])
    assert "torch" in loaded
    assert "genserve.vision.style" in genserve_outside(loaded, ("genserve.common", "genserve.jobs"))


def test_a_gateway_process_never_loads_torch(tmp_path: Path) -> None:
    gateway = start_role("gateway", tmp_path)
    try:
        maps = Path(f"/proc/{gateway.process.pid}/maps").read_text()
        assert "libtorch" not in maps, "the gateway process loaded torch"
        assert "libpython" in maps or "grpc" in maps, "the maps read are the gateway's own"
    finally:
        gateway.stop()
