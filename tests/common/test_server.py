"""The bootstrap's lifecycle on a real process: health means ready, SIGTERM drains."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genserve.v1 import text_pb2, text_pb2_grpc
from tests.conftest import start_role, wait_for


def test_sigterm_reports_not_serving_and_lets_streams_finish(tmp_path: Path) -> None:
    server = start_role(
        "text", tmp_path, {"GENSERVE_SHUTDOWN_NOTICE_SECONDS": "3", "GENSERVE_SHUTDOWN_GRACE_SECONDS": "20"}
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.SERVING
            )
            stream = text_pb2_grpc.TextServiceStub(channel).GenerateStream(
                text_pb2.GenerateRequest(prompt="ROMEO:", max_tokens=600, seed=1), timeout=60
            )
            received = [next(stream).text]
            server.process.send_signal(signal.SIGTERM)

            def status() -> int:
                return health.Check(health_pb2.HealthCheckRequest(), timeout=5).status

            # Within the 3 s notice the server still answers, and says it is going.
            not_serving = wait_for(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=3)
            received.extend(message.text for message in stream)
        assert not_serving, "health must turn NOT_SERVING once SIGTERM arrives"
        assert len("".join(received)) == 600, "the in-flight stream must be allowed to finish"
        assert server.process.wait(30) == 0
    finally:
        server.stop()
