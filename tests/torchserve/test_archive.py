"""`genserve export torchserve`: the archives' contents, and their handler run in-process against the
services it stands in for (same seed and parameters → same text as the text service, same PNG
bytes, so the same pixels, as the latent service). No TorchServe server and no Java: the handler
gets a minimal stand-in for TorchServe's `Context`.
"""

from __future__ import annotations

import importlib.util
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from PIL import Image

from genserve.v1 import latent_pb2, latent_pb2_grpc, text_pb2, text_pb2_grpc
from tests.conftest import MODEL_STORE, start_role
from tests.torchserve.conftest import LATENT, TEXT

pytest.importorskip("model_archiver", reason="torch-model-archiver is not installed (make torchserve)")


class FakeContext:
    """What TorchServe's ts.context.Context offers the handler: properties, manifest, statuses."""

    def __init__(self, model_dir: Path, batch_size: int) -> None:
        self.system_properties: dict[str, Any] = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": batch_size}
        self.manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text(encoding="utf-8"))
        self.statuses: dict[int, tuple[int, str]] = {}
        self.request_ids = {i: f"request-{i}" for i in range(batch_size)}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)


def entry_point(archive: Path, into: Path) -> Any:
    """Unpack `archive` as TorchServe does and import its handler module; returns its `handle`."""
    with zipfile.ZipFile(archive) as mar:
        mar.extractall(into)
    spec = importlib.util.spec_from_file_location(f"genserve_handler_{into.name}", into / "genserve_handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handle


def without_logprobs(reply: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(reply), object_hook=lambda d: {k: v for k, v in d.items() if k != "logprob"})


def logprobs(reply: dict[str, Any]) -> list[float]:
    """Each token's log-probability: a float32 step of 4 rows rounds differently from one of 1 row
    (the text is the same; the last digits of a log-probability may not be)."""
    return [t["logprob"] for c in reply["completions"] for t in c.get("tokens", [])]


def test_an_archive_holds_the_weights_the_entry_and_the_handler(archives: dict[str, Path]) -> None:
    manifest_entries = {e["name"]: e for e in json.loads((MODEL_STORE / "manifest.json").read_text())["models"]}
    for name, archive in archives.items():
        with zipfile.ZipFile(archive) as mar:
            names = set(mar.namelist())
            weights = Path(manifest_entries[name]["file"]).name
            assert names == {"MAR-INF/MANIFEST.json", "genserve_handler.py", "genserve-model.json", weights}
            manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
            assert manifest["runtime"] == "python"
            assert manifest["archiverVersion"] == "0.12.0"
            assert manifest["model"] == {
                "modelName": name,
                "serializedFile": weights,
                "handler": "genserve_handler.py",
                "modelVersion": manifest_entries[name]["version"],
            }
            assert json.loads(mar.read("genserve-model.json"))["entry"] == manifest_entries[name]
            assert mar.read(weights) == (MODEL_STORE / manifest_entries[name]["file"]).read_bytes()
            assert b"from genserve.torchserve.handler import handle" in mar.read("genserve_handler.py")


def test_only_text_and_latent_generators_export(archives: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from genserve.cli import app

    args = [
        "export",
        "torchserve",
        "--model",
        "fashion-classifier",
        "--out",
        str(tmp_path),
        "--store",
        str(MODEL_STORE),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "cannot be exported" in str(result.exception)
    assert "shakespeare-lstm" in str(result.exception)


def test_the_text_handler_decodes_a_batch_as_the_text_service(
    archives: dict[str, Path], tmp_path: Path, text_service: text_pb2_grpc.TextServiceStub
) -> None:
    handle = entry_point(archives[TEXT], tmp_path / "text")
    requests = [
        {"prompt": "ROMEO:", "max_tokens": 60, "seed": "7", "n": 2, "sampling": {"temperature": 0.8, "topP": 0.9}},
        {"prompt": "JULIET", "max_tokens": 5000},  # more than GENSERVE_TEXT_MAX_TOKENS
        {"prompt": "First Citizen:\n", "max_tokens": 80, "seed": 11, "stop": ["\n\n"], "logprobs": True},
        {"prompt": "KING", "max_tokens": 30, "temperatures": [0, 1.2], "seed": 3},
    ]
    context = FakeContext(tmp_path / "text", batch_size=len(requests))
    assert handle(None, context) is None  # TorchServe's initialise call
    # TorchServe hands JSON bodies over decoded, other inputs (gRPC's) as bytes.
    data = [{"body": requests[0]}, {"data": json.dumps(requests[1]).encode()}, {"body": requests[2]}]
    data.append({"data": json.dumps(requests[3])})
    replies = [json.loads(reply) for reply in handle(data, context)]

    assert set(context.statuses) == {1}
    assert context.statuses[1][0] == 400
    assert replies[1]["error"]["code"] == "INVALID_ARGUMENT"
    assert "max_tokens" in replies[1]["error"]["message"]
    for i in (0, 2, 3):
        expected = text_service.Generate(json_format.ParseDict(requests[i], text_pb2.GenerateRequest()), timeout=60)
        assert without_logprobs(replies[i]) == without_logprobs(json_format.MessageToDict(expected)), i
        assert logprobs(replies[i]) == pytest.approx(logprobs(json_format.MessageToDict(expected)), abs=1e-4)
    assert len(replies[0]["completions"]) == 2
    assert replies[0]["completions"][0]["text"] != replies[0]["completions"][1]["text"]


def test_the_latent_handler_draws_and_decodes_as_the_latent_service(
    archives: dict[str, Path], tmp_path: Path, latent_service: latent_pb2_grpc.LatentServiceStub
) -> None:
    handle = entry_point(archives[LATENT], tmp_path / "latent")
    sample = {"n": 3, "seed": 5, "truncation": 1.5, "return_latents": True}
    decode = {"latents": [{"values": [0.1 * i for i in range(16)]}, {"values": [-0.5] * 16}]}
    bad = {"n": 2, "temperature": 10}
    context = FakeContext(tmp_path / "latent", batch_size=3)
    replies = [json.loads(reply) for reply in handle([{"body": sample}, {"body": bad}, {"body": decode}], context)]

    assert context.statuses == {1: (400, replies[1]["error"]["message"])}
    assert "temperature" in replies[1]["error"]["message"]
    expected_sample = latent_service.Sample(json_format.ParseDict(sample, latent_pb2.SampleRequest()), timeout=60)
    expected_decode = latent_service.Decode(json_format.ParseDict(decode, latent_pb2.DecodeRequest()), timeout=60)
    assert replies[0] == json_format.MessageToDict(expected_sample)
    assert replies[2] == json_format.MessageToDict(expected_decode)
    assert len(replies[0]["images"]) == 3 and len(replies[2]["images"]) == 2
    reply = json_format.ParseDict(replies[0], latent_pb2.ImagesResponse())
    assert all(Image.open(io.BytesIO(image.data)).size == (28, 28) for image in reply.images)


def test_only_requests_that_ask_to_stream_get_pieces_and_they_add_up_to_the_whole(
    archives: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genserve.torchserve import handler as handler_module

    sent: list[tuple[dict[int, str], list[str]]] = []
    monkeypatch.setattr(
        handler_module, "send_intermediate", lambda replies, ids, context: sent.append((dict(ids), list(replies)))
    )
    handle = entry_point(archives[TEXT], tmp_path / "text")
    request = {"prompt": "ROMEO:", "max_tokens": 120, "seed": 21, "n": 2, "logprobs": True}
    context = FakeContext(tmp_path / "text", batch_size=3)
    handle(None, context)
    data = [{"body": {**request, "stream": True}}, {"body": request}, {"body": {"prompt": "A", "stream": "yes"}}]
    replies = [json.loads(reply) for reply in handle(data, context)]

    assert context.statuses == {2: (400, replies[2]["error"]["message"])}
    assert "'stream' must be true or false" in replies[2]["error"]["message"]
    assert all(ids == {0: "request-0"} and replies_sent[1:] == ["", ""] for ids, replies_sent in sent)
    pieces = [message for _, replies_sent in sent for message in json.loads(replies_sent[0])]
    pieces += replies[0]  # the last messages are the call's own reply, which ends the stream
    assert len(sent) >= 3 and isinstance(replies[0], list)
    assert pieces[0]["model"] == TEXT and pieces[0]["seed"] == "21" and "model" not in pieces[1]
    whole = replies[1]["completions"]
    for completion in whole:
        mine = [p for p in pieces if p.get("index", 0) == completion.get("index", 0)]
        assert "".join(p.get("text", "") for p in mine) == completion["text"]
        assert [t.get("id", 0) for p in mine for t in p.get("tokens", [])] == [
            t.get("id", 0) for t in completion["tokens"]
        ]
        assert mine[-1]["finishReason"] == completion["finishReason"]
        assert all("finishReason" not in p for p in mine[:-1])


def test_latent_models_refuse_to_stream(archives: dict[str, Path], tmp_path: Path) -> None:
    handle = entry_point(archives[LATENT], tmp_path / "latent")
    context = FakeContext(tmp_path / "latent", batch_size=1)
    (reply,) = handle([{"body": {"n": 1, "stream": True}}], context)
    assert context.statuses[0][0] == 400
    assert "only text models stream" in json.loads(reply)["error"]["message"]


@pytest.mark.parametrize(
    ("name", "family"), [("shakespeare-transformer", "text"), ("mnist-dcgan", "latent"), ("fashion-vae-16d", "latent")]
)
def test_every_kind_of_exportable_model_answers_as_its_service(name: str, family: str, tmp_path: Path) -> None:
    """The Transformer and the GAN generator (beside the LSTM and VAE above) under the handler."""
    from typer.testing import CliRunner

    from genserve.cli import app

    out = tmp_path / "mar"
    args = ["export", "torchserve", "--model", name, "--out", str(out), "--store", str(MODEL_STORE)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    handle = entry_point(out / f"{name}.mar", tmp_path / "unpacked")
    context = FakeContext(tmp_path / "unpacked", batch_size=2)
    handle(None, context)
    service = start_role(family, tmp_path / "service", {f"GENSERVE_{family.upper()}_MODELS": name})
    try:
        with grpc.insecure_channel(service.address) as channel:
            if family == "text":
                bodies = [
                    {"prompt": "ROMEO:", "max_tokens": 40, "seed": 3},
                    {"prompt": "KING", "max_tokens": 25, "seed": 4},
                ]
                generate = text_pb2_grpc.TextServiceStub(channel).Generate
                expected = [generate(json_format.ParseDict(b, text_pb2.GenerateRequest()), timeout=60) for b in bodies]
            else:
                bodies = [{"n": 2, "seed": 8}, {"latents": [{"values": [0.2] * (16 if "vae" in name else 64)}]}]
                stub = latent_pb2_grpc.LatentServiceStub(channel)
                expected = [
                    stub.Sample(json_format.ParseDict(bodies[0], latent_pb2.SampleRequest()), timeout=60),
                    stub.Decode(json_format.ParseDict(bodies[1], latent_pb2.DecodeRequest()), timeout=60),
                ]
    finally:
        service.stop()
    replies = [json.loads(reply) for reply in handle([{"body": b} for b in bodies], context)]
    assert context.statuses == {}
    assert replies == [json_format.MessageToDict(message) for message in expected]
