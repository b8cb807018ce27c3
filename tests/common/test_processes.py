"""The private Redis that `genserve up` and the tests start: real redis-server, AOF on."""

from __future__ import annotations

from pathlib import Path

import redis

from genserve.common.processes import PrivateRedis, port_is_free


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
