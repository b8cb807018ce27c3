"""The private Redis that `genserve up` and the tests start: real redis-server, AOF on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import redis

from genserve.common.processes import (
    PrivateRedis,
    StartError,
    free_port,
    port_is_free,
    spawn,
    stop_process,
    wait_http_ready,
    wait_serving,
)


def test_private_redis_keeps_acknowledged_writes_across_a_crash(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "redis")
    url = server.start()
    client = redis.Redis.from_url(url)
    client.set("genserve:test", "kept")  # acknowledged = written to the AOF before the reply
    client.close()
    port = server.port
    server.kill()
    assert port_is_free(port)
    restarted = PrivateRedis(tmp_path / "redis", port=port)
    client = redis.Redis.from_url(restarted.start())
    try:
        assert client.get("genserve:test") == b"kept"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("appendfsync")["appendfsync"] == "everysec"
    finally:
        client.close()
        restarted.stop()
    assert port_is_free(port)


def test_waiting_for_a_child_fails_early_when_it_exits_and_in_time_when_it_hangs(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    quitter = spawn([sys.executable, "-c", "print('cannot load the model'); raise SystemExit(3)"], log)
    with pytest.raises(StartError, match=r"(?s)exited with code 3 while starting.*cannot load the model"):
        wait_serving(f"127.0.0.1:{free_port()}", quitter, log, timeout=30, name="text")
    sleeper = spawn([sys.executable, "-c", "import time; time.sleep(30)"], log)
    try:
        with pytest.raises(StartError, match=r"text did not report SERVING on 127\.0\.0\.1:\d+ within 0s"):
            wait_serving(f"127.0.0.1:{free_port()}", sleeper, log, timeout=0.5, name="text")
        with pytest.raises(StartError, match=r"http was not ready at http://127.0.0.1:\d+/healthz \(last answer: "):
            wait_http_ready(f"http://127.0.0.1:{free_port()}/healthz", sleeper, log, timeout=0.5, name="http")
    finally:
        stop_process(sleeper, 5)
