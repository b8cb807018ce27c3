"""`genserve up`: starts everything, serves a working endpoint, stops every child on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import grpc
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from genserve.client import Client, JobEventKind, JobState
from genserve.common.processes import free_ports, port_is_free
from genserve.stack import RestartPolicy, StackError, parse_replicas
from genserve.v1 import latent_pb2, latent_pb2_grpc, text_pb2, text_pb2_grpc
from tests.conftest import MODEL_STORE, wait_for

ROLES = ("GATEWAY", "TEXT", "VISION", "LATENT", "WORKER", "HTTP")


def start_up(
    tmp_path: Path, settings: Mapping[str, str] | None = None, arguments: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], dict[str, int], list[str]]:
    """`genserve up ARGUMENTS` with every role on free ports and its data under `tmp_path`, plus
    `settings`; returns once it says it is up: the process, its ports by variable stem, and its
    output so far."""
    names = [f"{role}{kind}" for role in ROLES for kind in ("", "_METRICS")]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = {
        **os.environ,
        "GENSERVE_MODEL_STORE": str(MODEL_STORE),
        "GENSERVE_VAR_DIR": str(tmp_path / "var"),
        **{f"GENSERVE_{name}_PORT": str(port) for name, port in ports.items()},
        "COLUMNS": "200",
        **(settings or {}),
    }
    env.pop("REDIS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "genserve.cli", "up", *arguments],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    assert process.stdout is not None
    for line in process.stdout:  # ends at the "up" banner, or when the process exits
        output.append(line)
        if "genserve is up" in line:
            break
    if not any("genserve is up" in line for line in output):
        process.kill()
        raise AssertionError("".join(output) + (process.stdout.read() or ""))
    return process, ports, output


def answered(metrics_port: int, method: str) -> float:
    """Calls of `method` a service answered OK, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
        return sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "genserve_requests_total"
            and sample.labels.get("method") == method
            and sample.labels.get("code") == "OK"
        )


def test_up_serves_and_stops_cleanly(tmp_path: Path) -> None:
    process, ports, output = start_up(tmp_path, arguments=("--replicas", "text=2,latent=2,worker=2"))
    env = {**os.environ, "COLUMNS": "200"}
    try:
        with grpc.insecure_channel(f"127.0.0.1:{ports['GATEWAY']}") as channel:
            stub = text_pb2_grpc.TextServiceStub(channel)
            responses = [
                stub.Generate(text_pb2.GenerateRequest(prompt="ROMEO:", max_tokens=10, seed=1), timeout=30)
                for _ in range(20)
            ]
            latent = latent_pb2_grpc.LatentServiceStub(channel)
            for seed in range(20):
                latent.Sample(latent_pb2.SampleRequest(n=1, seed=seed), timeout=30)
        assert all(len(response.completions[0].text) == 10 for response in responses)
        # A second replica listens on the first one's ports + 10; the gateway spreads over both.
        for role, method in (("TEXT", "Generate"), ("LATENT", "Sample")):
            metrics = ports[f"{role}_METRICS"]
            spread = [answered(metrics, method), answered(metrics + 10, method)]
            assert sum(spread) == 20 and min(spread) >= 7, (role, spread)
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
        # The HTTP front door, started after the gateway, reaches the model through it.
        http = f"http://127.0.0.1:{ports['HTTP']}"
        with urllib.request.urlopen(f"{http}/healthz", timeout=10) as health:
            assert health.status == 200
        body = json.dumps({"prompt": "ROMEO:", "max_tokens": 12, "seed": 1}).encode()
        request = urllib.request.Request(f"{http}/v1/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert len(json.loads(answer.read())["choices"][0]["text"]) == 12
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        output.append(rest)
    text = "".join(output)
    assert process.returncode == 0, text
    assert "gateway  stopped (exit 0)" in text and "text     stopped (exit 0)" in text and "redis    stopped" in text
    assert all(f"{name} stopped (exit 0)" in text for name in ("text-2  ", "latent-2", "worker-2")), text
    assert text.index("http     stopped (exit 0)") < text.index("gateway  stopped"), "the front door stops first"
    assert f"http     SERVING on http://127.0.0.1:{ports['HTTP']}" in text
    assert "redis://:***@" in text and "password file under" in text, "the private Redis has a password, not shown"
    assert all(port_is_free(port) and port_is_free(port + 10) for port in ports.values())


def test_a_crashed_child_restarts_later_each_time_and_one_that_keeps_crashing_stops() -> None:
    policy = RestartPolicy(max_crashes=5, window_seconds=60.0, first_delay=1.0, max_delay=30.0)
    assert [policy.delay_after_crash(t) for t in (0.0, 1.0, 3.0, 7.0, 15.0)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert policy.delay_after_crash(31.0) is None, "a sixth crash within a minute gives up"
    calm = RestartPolicy(max_crashes=5, window_seconds=60.0, first_delay=1.0, max_delay=30.0)
    assert [calm.delay_after_crash(t) for t in (0.0, 100.0, 200.0)] == [1.0, 1.0, 1.0], "old crashes are forgotten"
    capped = RestartPolicy(max_crashes=50, window_seconds=60.0, first_delay=1.0, max_delay=30.0)
    assert max(capped.delay_after_crash(float(t)) or 0.0 for t in range(10)) == 30.0


def children_of(pid: int) -> dict[str, int]:
    """The `genserve serve ROLE` children of process `pid`, by role."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            words = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and "serve" in words:
            found[words[words.index("serve") + 1]] = int(entry)
    return found


def test_up_restarts_a_killed_worker_and_its_job_finishes_once(tmp_path: Path) -> None:
    # A dead worker's job is claimed after 3 s; checkpoints every 5 steps.
    settings = {
        "GENSERVE_JOB_CLAIM_IDLE_SECONDS": "3",
        "GENSERVE_JOB_HEARTBEAT_SECONDS": "0.5",
        "GENSERVE_JOB_CHECKPOINT_EVERY": "5",
        "GENSERVE_TORCH_THREADS": "1",
    }
    up, ports, output = start_up(tmp_path, settings)
    try:
        before = children_of(up.pid)
        photo, painting = Image.new("RGB", (64, 48), (200, 120, 40)), Image.new("RGB", (32, 32), (20, 40, 200))
        with Client(f"127.0.0.1:{ports['GATEWAY']}", timeout=120) as client:
            job = client.submit_style_transfer(photo, painting, iterations=150, max_size=64, seed=1)
            assert wait_for(lambda: client.get_job(job.id).step >= 6, timeout=60), "the job never got going"
            os.kill(before["worker"], signal.SIGKILL)
            events = list(client.watch_job(job.id))
            record = client.get_job(job.id)
        after = children_of(up.pid)
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=90)
        output.append(rest)
    text = "".join(output)
    assert "worker   exited unexpectedly with code -9; restarting in 1s" in text, text
    assert "worker   started again" in text, text
    assert after["worker"] != before["worker"] and after["gateway"] == before["gateway"], "only the worker was replaced"
    terminal = [event for event in events if event.terminal]
    assert [event.state for event in terminal] == [JobState.SUCCEEDED], "the job ended once, and well"
    assert any(event.kind == JobEventKind.RESUMED for event in events), "the new worker resumed it"
    assert record.state == JobState.SUCCEEDED and record.attempt == 2 and record.step == 150
    assert up.returncode == 0, text


def test_replicas_are_role_counts_and_a_bad_one_is_a_clear_error() -> None:
    assert parse_replicas("text=2, latent=2,worker=3") == {"text": 2, "latent": 2, "worker": 3}
    assert parse_replicas("") == {}
    for wrong, message in (
        ("gateway=2", "ROLE one of text, vision, latent, worker"),
        ("text", "is not ROLE=COUNT"),
        ("text=two", "is not ROLE=COUNT"),
        ("text=0", "outside 1..8"),
    ):
        with pytest.raises(StackError, match=message):
            parse_replicas(wrong)
    result = subprocess.run(
        [sys.executable, "-m", "genserve.cli", "up", "--replicas", "gateway=3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert "error: --replicas: 'gateway=3'" in result.stdout
