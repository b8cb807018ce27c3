"""The decode process: the only one of the text service that loads torch; its death fails calls cleanly and stops
the service loudly."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import grpc
import pytest

from genserve.v1 import text_pb2, text_pb2_grpc
from tests.conftest import start_role


def decode_process_of(pid: int) -> int:
    """The child that multiprocessing spawned to decode (not its resource tracker)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if int(stat[3]) == pid and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            return int(entry)
    raise AssertionError(f"no decode process under pid {pid}")


def test_a_dead_decode_process_fails_calls_and_stops_the_service(tmp_path: Path) -> None:
    server = start_role("text", tmp_path, {"GENSERVE_SHUTDOWN_NOTICE_SECONDS": "0"})
    try:
        decoder = decode_process_of(server.process.pid)
        with grpc.insecure_channel(server.address) as channel:
            stream = text_pb2_grpc.TextServiceStub(channel).GenerateStream(
                text_pb2.GenerateRequest(prompt="ROMEO:", max_tokens=2048), timeout=60
            )
            next(stream)
            os.kill(decoder, signal.SIGKILL)
            with pytest.raises(grpc.RpcError) as info:
                list(stream)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "text decoder stopped" in info.value.details()
        assert server.process.wait(30) == 1, "a supervisor must see the failure"
        assert "the text decode process died" in server.log_path.read_text()
    finally:
        server.stop()


def loads_torch(pid: int) -> bool:
    """Whether process `pid` has torch's shared library mapped (it is, from the first `import torch`)."""
    return "libtorch_cpu" in Path(f"/proc/{pid}/maps").read_text()


def test_only_the_decode_process_loads_torch(tmp_path: Path) -> None:
    server = start_role("text", tmp_path)
    try:
        assert loads_torch(decode_process_of(server.process.pid)), "the check must see torch where it is"
        assert not loads_torch(server.process.pid), "the text service's gRPC process imported torch"
    finally:
        server.stop()
