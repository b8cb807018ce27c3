"""The gateway with TorchServe as its text and latent backend, against a real TorchServe.

TorchServe (Java frontend, Python workers running genserve's handler) is started on loopback
ports with its own model store and `--ncs`, the exported archives are registered, and a genserve
gateway is pointed at it (GENSERVE_TEXT_BACKEND=torchserve, GENSERVE_LATENT_BACKEND=torchserve,
the token from TorchServe's key_file.json). Its answers are compared with genserve's own text and
latent services: the same text for the same seed and parameters, the same pixels. TorchServe is
stopped at the end and no process of it may be left. Without Java 17 the module skips, saying why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from genserve.testing import ServerProcess
from genserve.v1 import latent_pb2, latent_pb2_grpc, models_pb2, models_pb2_grpc, text_pb2, text_pb2_grpc
from tests.conftest import start_role
from tests.torchserve.conftest import LATENT, TEXT

pytest.importorskip("ts", reason="TorchServe is not installed (make torchserve)")

from genserve.torchserve.launcher import TorchServe, java_missing_reason

UNREGISTERED = "shakespeare-transformer"  # routed to TorchServe by the gateway, never registered there


@pytest.fixture(scope="module")
def torchserve(archives: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    reason = java_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    store = archives[TEXT].parent
    server = TorchServe(store, tmp_path_factory.mktemp("torchserve"), env={"GENSERVE_TORCH_THREADS": "1"})
    try:
        server.start()
        # Batches of up to 4, waiting up to 200 ms to fill: concurrent calls share a batch.
        server.register(f"{TEXT}.mar", batch_size=4, max_batch_delay_ms=200)
        server.register(f"{LATENT}.mar")
        yield server
    finally:
        pids = server.pids()
        server.stop()
        left = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
        assert left == [], f"TorchServe processes left behind: {left}"


def gateway_env(server: TorchServe, workdir: Path) -> dict[str, str]:
    return {
        "GENSERVE_TEXT_BACKEND": "torchserve",
        "GENSERVE_TEXT_ADDR": server.inference_address,
        "GENSERVE_TEXT_TORCHSERVE_MODELS": f"{TEXT},{UNREGISTERED}",
        "GENSERVE_LATENT_BACKEND": "torchserve",
        "GENSERVE_LATENT_ADDR": server.inference_address,
        "GENSERVE_LATENT_TORCHSERVE_MODELS": LATENT,
        "GENSERVE_TORCHSERVE_TOKEN_FILE": str(workdir / "key_file.json"),
    }


@pytest.fixture(scope="module")
def gateway(torchserve: TorchServe, tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    process = start_role("gateway", tmp_path_factory.mktemp("gateway"), gateway_env(torchserve, torchserve.workdir))
    try:
        with grpc.insecure_channel(process.address) as channel:
            yield channel
    finally:
        process.stop()


def test_same_seed_and_parameters_give_the_text_service_s_text(
    gateway: grpc.Channel, text_service: text_pb2_grpc.TextServiceStub
) -> None:
    stub = text_pb2_grpc.TextServiceStub(gateway)
    requests = [
        text_pb2.GenerateRequest(
            prompt="ROMEO:", max_tokens=60, seed=7, n=2, sampling=text_pb2.SamplingParams(temperature=0.8, top_p=0.9)
        ),
        text_pb2.GenerateRequest(prompt="First Citizen:\n", max_tokens=80, seed=11, stop=["\n\n"]),
        text_pb2.GenerateRequest(model=TEXT, prompt="KING", max_tokens=30, temperatures=[0, 1.2], seed=3),
    ]
    for request in requests:
        served = stub.Generate(request, timeout=60)
        assert served == text_service.Generate(request, timeout=60)
        assert served.model == TEXT and all(c.text for c in served.completions)


def test_streamed_text_arrives_in_pieces_that_make_the_whole(
    gateway: grpc.Channel, text_service: text_pb2_grpc.TextServiceStub
) -> None:
    request = text_pb2.GenerateRequest(prompt="JULIET:", max_tokens=200, seed=5)
    pieces = list(text_pb2_grpc.TextServiceStub(gateway).GenerateStream(request, timeout=60))
    whole = text_service.Generate(request, timeout=60).completions[0]

    assert len(pieces) >= 3, "the text came in one piece"
    assert (pieces[0].model, pieces[0].seed) == (TEXT, 5)
    assert "".join(p.text for p in pieces) == whole.text
    assert pieces[-1].finish_reason == whole.finish_reason == text_pb2.FINISH_REASON_LENGTH
    assert pieces[-1].completion_tokens == 200
    assert all(p.finish_reason == text_pb2.FINISH_REASON_UNSPECIFIED for p in pieces[:-1])


def test_streamed_and_whole_calls_sharing_a_batch_each_get_their_own_answer(
    gateway: grpc.Channel, torchserve: TorchServe, text_service: text_pb2_grpc.TextServiceStub
) -> None:
    """TorchServe 0.12.0 puts streamed calls into batches with the others (it does not force batch
    size 1 for them): the handler must send pieces to the streamed requests only."""
    stub = text_pb2_grpc.TextServiceStub(gateway)
    requests = [text_pb2.GenerateRequest(prompt="HAMLET:", max_tokens=150, seed=seed) for seed in (21, 22, 23, 24)]

    def call(position: int) -> str:
        if position % 2:
            return "".join(piece.text for piece in stub.GenerateStream(requests[position], timeout=60))
        return stub.Generate(requests[position], timeout=60).completions[0].text

    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(call, range(4)))
    assert texts == [text_service.Generate(r, timeout=60).completions[0].text for r in requests]
    model_log = (torchserve.logs_dir / "model_log.log").read_text(encoding="utf-8")
    assert "batch of 4 requests, 2 streamed" in model_log, "the four calls did not share a batch"


def test_the_same_pixels_as_the_latent_service(
    gateway: grpc.Channel, latent_service: latent_pb2_grpc.LatentServiceStub
) -> None:
    stub = latent_pb2_grpc.LatentServiceStub(gateway)
    sample = latent_pb2.SampleRequest(n=3, seed=5, truncation=1.5, return_latents=True)
    served = stub.Sample(sample, timeout=60)
    assert served == latent_service.Sample(sample, timeout=60)
    assert len(served.images) == 3 and served.model == LATENT

    decode = latent_pb2.DecodeRequest(latents=[latent_pb2.LatentVector(values=[0.1 * i for i in range(16)])])
    assert stub.Decode(decode, timeout=60) == latent_service.Decode(decode, timeout=60)


def code_and_message(call: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return call.code(), call.details() or ""


def test_errors_come_back_with_the_right_codes(gateway: grpc.Channel) -> None:
    text = text_pb2_grpc.TextServiceStub(gateway)
    latent = latent_pb2_grpc.LatentServiceStub(gateway)

    with pytest.raises(grpc.RpcError) as unknown:
        text.Generate(text_pb2.GenerateRequest(model="no-such-model", prompt="A"), timeout=30)
    code, message = code_and_message(unknown.value)
    assert code == grpc.StatusCode.NOT_FOUND and TEXT in message

    with pytest.raises(grpc.RpcError) as unregistered:
        text.Generate(text_pb2.GenerateRequest(model=UNREGISTERED, prompt="A"), timeout=30)
    code, message = code_and_message(unregistered.value)
    assert code == grpc.StatusCode.NOT_FOUND and f"no model {UNREGISTERED!r} registered" in message

    with pytest.raises(grpc.RpcError) as too_long:
        text.Generate(text_pb2.GenerateRequest(prompt="A", max_tokens=5000), timeout=30)
    code, message = code_and_message(too_long.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_tokens" in message

    with pytest.raises(grpc.RpcError) as streamed:
        list(
            text.GenerateStream(
                text_pb2.GenerateRequest(prompt="A", sampling=text_pb2.SamplingParams(temperature=-1)), timeout=30
            )
        )
    code, message = code_and_message(streamed.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "temperature" in message

    with pytest.raises(grpc.RpcError) as hot:
        latent.Sample(latent_pb2.SampleRequest(n=2, temperature=10), timeout=30)
    code, message = code_and_message(hot.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "temperature" in message

    with pytest.raises(grpc.RpcError) as encode:
        latent.Encode(latent_pb2.EncodeRequest(), timeout=30)
    code, message = code_and_message(encode.value)
    assert code == grpc.StatusCode.UNIMPLEMENTED and "TorchServe" in message

    with pytest.raises(grpc.RpcError) as late:
        text.Generate(text_pb2.GenerateRequest(prompt="A", max_tokens=2000), timeout=0.3)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_the_models_routed_to_torchserve_are_listed(gateway: grpc.Channel) -> None:
    listed = models_pb2_grpc.ModelServiceStub(gateway).ListModels(models_pb2.ListModelsRequest(), timeout=30)
    by_name = {model.name: model for model in listed.models}
    assert {TEXT, UNREGISTERED, LATENT} <= set(by_name)
    assert by_name[TEXT].is_default and by_name[TEXT].device.startswith("torchserve 127.0.0.1:")
    assert by_name[TEXT].architecture == "lstm" and by_name[TEXT].sha256
    assert json_format.MessageToDict(by_name[LATENT])["family"] == "latent"


def test_a_refused_token_is_unavailable_naming_the_setting(torchserve: TorchServe, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not-the-key\n")
    env = {**gateway_env(torchserve, torchserve.workdir), "GENSERVE_TORCHSERVE_TOKEN_FILE": str(token)}
    process: ServerProcess = start_role("gateway", tmp_path, env)
    try:
        with grpc.insecure_channel(process.address) as channel, pytest.raises(grpc.RpcError) as refused:
            text_pb2_grpc.TextServiceStub(channel).Generate(text_pb2.GenerateRequest(prompt="A"), timeout=30)
        code, message = code_and_message(refused.value)
        assert code == grpc.StatusCode.UNAVAILABLE and "GENSERVE_TORCHSERVE_TOKEN_FILE" in message
    finally:
        process.stop()
