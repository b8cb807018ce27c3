"""Shared fixtures: tiny in-process models for the math, and real processes for the services.

Service tests start their own `genserve serve` processes (and Redis, where needed) on free
loopback ports and talk to them over real sockets; nothing the machine happens to run is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import torch

from genserve.testing import ServerProcess
from genserve.text.checkpoint import LoadedModel, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MODEL_STORE = ROOT / "model_store"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--playground-screenshot",
        default="",
        metavar="PATH",
        help="tests/http/test_playground.py: fill the playground with real results and save a screenshot to PATH",
    )


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def start_role(role: str, log_dir: Path, env: Mapping[str, str] | None = None) -> ServerProcess:
    return ServerProcess(role, log_dir, {"GENSERVE_MODEL_STORE": str(MODEL_STORE), **(env or {})})


@contextmanager
def behind_gateway(
    role: str, log_dir: Path, env: Mapping[str, str], gateway_env: Mapping[str, str] | None = None
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """A backend `role` and a gateway routing to it (GENSERVE_<ROLE>_ADDR), both stopped afterwards."""
    backend = start_role(role, log_dir, env)
    try:
        gateway = start_role(
            "gateway", log_dir, {f"GENSERVE_{role.upper()}_ADDR": backend.address, **(gateway_env or {})}
        )
    except Exception:
        backend.stop()
        raise
    try:
        yield backend, gateway
    finally:
        gateway.stop()
        backend.stop()


@dataclass
class TextStack:
    text: ServerProcess
    gateway: ServerProcess


# Small limits so the limit tests stay fast; the chi-square test needs many completions at once.
TEST_TEXT_ENV = {
    "GENSERVE_TEXT_MAX_COMPLETIONS": "64",
    "GENSERVE_TEXT_MAX_TOKENS": "2048",
    "GENSERVE_TEXT_MAX_PROMPT_CHARS": "2000",
}


@pytest.fixture(scope="session")
def text_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextStack]:
    log_dir = tmp_path_factory.mktemp("logs")
    text = start_role("text", log_dir, TEST_TEXT_ENV)
    try:
        gateway = start_role("gateway", log_dir, {"GENSERVE_TEXT_ADDR": text.address})
    except Exception:
        text.stop()
        raise
    yield TextStack(text, gateway)
    gateway.stop()
    text.stop()


@pytest.fixture(scope="session")
def gateway_channel(text_stack: TextStack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(text_stack.gateway.address) as channel:
        yield channel


@pytest.fixture(scope="session")
def default_text_model() -> tuple[str, LoadedModel]:
    """The committed model the text service uses by default (lowest validation loss)."""
    from genserve.common.model_store import ModelStore

    entries = ModelStore(MODEL_STORE).entries_of("text")
    best = min(entries, key=lambda e: e.metrics["val_loss_nats_per_char"])
    return best.name, load_checkpoint(MODEL_STORE / best.file, torch.device("cpu"))
