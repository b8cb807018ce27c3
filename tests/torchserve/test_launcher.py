"""genserve.torchserve.launcher: a real TorchServe (Java frontend, Python workers) serving an exported
archive, with and without tokens, two at once, and nothing of it left running once stopped.

Needs the `torchserve` extra and Java 17 or later; skips, saying which is missing, without them.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import grpc
import pytest

from genserve.torchserve.launcher import TorchServe, TorchServeError, java_missing_reason
from genserve.tsapi import inference_pb2, inference_pb2_grpc
from tests.conftest import MODEL_STORE, wait_for

MODEL = "shakespeare-lstm"
REQUEST = {"prompt": "ROMEO:\n", "max_tokens": 24, "seed": 7}

_reason = java_missing_reason()
if _reason is not None:
    pytest.skip(f"TorchServe cannot run here: {_reason}", allow_module_level=True)

psutil = pytest.importorskip("psutil", reason="psutil comes with torchserve")


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from genserve.common.model_store import ModelStore
    from genserve.torchserve.archive import export_archive

    out = tmp_path_factory.mktemp("model-store")
    export_archive(ModelStore(MODEL_STORE), MODEL, out)
    return out


def predict(server: TorchServe, metadata: list[tuple[str, str]]) -> dict[str, object]:
    with grpc.insecure_channel(server.inference_address) as channel:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        request = inference_pb2.PredictionsRequest(model_name=MODEL, input={"data": json.dumps(REQUEST).encode()})
        reply = stub.Predictions(request, metadata=metadata, timeout=60)
    body = json.loads(reply.prediction)
    assert isinstance(body, dict) and "error" not in body, body
    return body


def still_running(pids: list[int]) -> list[int]:
    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def test_torchserve_serves_an_archive_behind_tokens_and_leaves_no_process(model_store: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    with (
        TorchServe(model_store, tmp_path / "a", env={"GENSERVE_LAUNCHER_PROBE": "a"}) as server,
        TorchServe(model_store, tmp_path / "b", token_auth=False) as open_server,
    ):
        assert server.inference_token and server.management_token
        assert server.metadata() == [("authorization", f"Bearer {server.inference_token}")]
        assert open_server.inference_token is None and open_server.metadata() == []
        kinds = ("inference_address", "management_address", "http_address")
        addresses = [getattr(s, kind) for s in (server, open_server) for kind in kinds]
        assert len(set(addresses)) == 6 and all(a.startswith("127.0.0.1:") for a in addresses)

        # Two at once: each its own sockets to its workers (their own java.io.tmpdir), no shared pid file.
        server.register(f"{MODEL}.mar", batch_size=4, max_batch_delay_ms=10)
        open_server.register(f"{MODEL}.mar")
        described = server.describe(MODEL)[0]
        assert described["batchSize"] == 4 and described["maxBatchDelay"] == 10, described

        frontend, *workers = server.pids()
        assert server.process is not None and frontend == server.process.pid
        assert len(workers) == 1, server.pids()
        seen = server.pids() + open_server.pids()
        assert len(seen) == 4, seen
        worker = psutil.Process(workers[0])
        # The worker runs this interpreter and sees the environment given to the launcher.
        assert worker.cmdline()[0] == sys.executable, worker.cmdline()
        assert worker.environ().get("GENSERVE_LAUNCHER_PROBE") == "a"

        first = predict(server, server.metadata())
        assert first == predict(open_server, [])  # same seed, same reply
        completion = first["completions"][0]  # type: ignore[index]
        assert completion["finishReason"] == "FINISH_REASON_LENGTH" and len(completion["text"]) == 24, completion

        with pytest.raises(grpc.RpcError) as denied:
            predict(server, [])
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

        with pytest.raises(TorchServeError, match=r"missing\.mar"):
            server.register("missing.mar", timeout=30)

        server.unregister(MODEL)
        assert not still_running(workers)
        # The frontend may still run a short-lived child of its own for a moment (seen once in CI).
        assert wait_for(lambda: server.pids() == [frontend], 15), server.pids()
    assert seen and not still_running(seen)
    server.stop()  # idempotent
    assert server.pids() == []


def test_a_torchserve_that_cannot_start_says_why(model_store: Path, tmp_path: Path) -> None:
    with pytest.raises(TorchServeError, match="is not a folder"):
        TorchServe(tmp_path / "no-such-store", tmp_path / "none").start()
    server = TorchServe(model_store, tmp_path / "ts")
    # Its HTTP inference port taken: the frontend exits, and the error carries its log's tail.
    with socket.socket() as taken:
        host, port = server.http_address.rsplit(":", 1)
        taken.bind((host, int(port)))
        taken.listen()
        with pytest.raises(TorchServeError) as failed:
            server.start(timeout=60)
    message = str(failed.value)
    assert "exited with code" in message and "torchserve.log" in message, message
    assert "Address already in use" in message, message
    assert server.pids() == []
