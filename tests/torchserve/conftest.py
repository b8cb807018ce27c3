"""What the TorchServe tests share: archives of one text and one latent model, exported by the CLI,
and the genserve services whose answers those archives must reproduce."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from genserve.v1 import latent_pb2_grpc, text_pb2_grpc
from tests.conftest import MODEL_STORE, start_role

TEXT, LATENT = "shakespeare-lstm", "mnist-vae-16d"
T = TypeVar("T")


@pytest.fixture(scope="session")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`genserve export torchserve` of TEXT and LATENT: name → its .mar."""
    pytest.importorskip("model_archiver", reason="torch-model-archiver is not installed (make torchserve)")
    from typer.testing import CliRunner

    from genserve.cli import app

    out = tmp_path_factory.mktemp("mar")
    args = ["export", "torchserve", "--model", TEXT, "--model", LATENT, "--out", str(out), "--store", str(MODEL_STORE)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return {name: out / f"{name}.mar" for name in (TEXT, LATENT)}


def served(role: str, model: str, stub: type[T], tmp_path_factory: pytest.TempPathFactory) -> Iterator[T]:
    """A real genserve `role` service holding `model` alone, as a stub of `stub`; stopped afterwards."""
    process = start_role(role, tmp_path_factory.mktemp(role), {f"GENSERVE_{role.upper()}_MODELS": model})
    try:
        with grpc.insecure_channel(process.address) as channel:
            yield stub(channel)  # type: ignore[call-arg]  # generated stubs take the channel
    finally:
        process.stop()


@pytest.fixture(scope="module")
def text_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[text_pb2_grpc.TextServiceStub]:
    yield from served("text", TEXT, text_pb2_grpc.TextServiceStub, tmp_path_factory)


@pytest.fixture(scope="module")
def latent_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[latent_pb2_grpc.LatentServiceStub]:
    yield from served("latent", LATENT, latent_pb2_grpc.LatentServiceStub, tmp_path_factory)
