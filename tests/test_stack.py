"""`genserve up`: starts everything, serves a working endpoint, stops every child on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from genserve.common.processes import free_ports, port_is_free
from genserve.v1 import text_pb2, text_pb2_grpc
from tests.conftest import MODEL_STORE


def test_up_serves_and_stops_cleanly(tmp_path: Path) -> None:
    names = ("GATEWAY", "GATEWAY_METRICS", "TEXT", "TEXT_METRICS")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = {
        **os.environ,
        "GENSERVE_MODEL_STORE": str(MODEL_STORE),
        "GENSERVE_VAR_DIR": str(tmp_path / "var"),
        **{f"GENSERVE_{name}_PORT": str(port) for name, port in ports.items()},
        "COLUMNS": "200",
    }
    env.pop("REDIS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "genserve.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    try:
        deadline = time.monotonic() + 120
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "genserve is up" in line or time.monotonic() > deadline:
                break
        assert any("genserve is up" in line for line in output), "".join(output)
        with grpc.insecure_channel(f"127.0.0.1:{ports['GATEWAY']}") as channel:
            response = text_pb2_grpc.TextServiceStub(channel).Generate(
                text_pb2.GenerateRequest(prompt="ROMEO:", max_tokens=10, seed=1), timeout=30
            )
        assert len(response.completions[0].text) == 10
        client = subprocess.run(
            [
                sys.executable,
                "-m",
                "genserve.cli",
                "client",
                "text",
                "JULIET:",
                "--max-tokens",
                "15",
                "--address",
                f"127.0.0.1:{ports['GATEWAY']}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout.startswith("JULIET:") and len(client.stdout.strip()) >= len("JULIET:") + 5
        assert (tmp_path / "var" / "redis" / "appendonlydir").exists()
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        output.append(rest)
    text = "".join(output)
    assert process.returncode == 0, text
    assert "gateway  stopped (exit 0)" in text and "text     stopped (exit 0)" in text and "redis    stopped" in text
    assert all(port_is_free(port) for port in ports.values())
