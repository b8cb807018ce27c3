"""The job system's Redis scripts on a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from genserve.common.processes import PrivateRedis
from genserve.jobs import scripts
from genserve.jobs.records import PREFIX, QUEUE


@pytest.fixture
def client(tmp_path: Path) -> Iterator[redis.Redis]:
    server = PrivateRedis(tmp_path / "redis")
    connection = redis.Redis.from_url(server.start())
    try:
        yield connection
    finally:
        connection.close()
        server.stop()


def test_ensure_group_makes_the_queue_and_its_group_once(client: redis.Redis) -> None:
    ensure = client.register_script(scripts.ENSURE_GROUP)
    assert ensure(args=[PREFIX]) == b"ok"
    client.xadd(QUEUE, {"job": "a"})
    assert ensure(args=[PREFIX]) == b"ok", "an existing group is left as it is"
    [group] = client.xinfo_groups(QUEUE)
    assert group["name"] == scripts.GROUP.encode() and group["last-delivered-id"] == b"0-0"
    assert client.xlen(QUEUE) == 1


def test_ensure_group_reports_other_errors(client: redis.Redis) -> None:
    client.set(QUEUE, "not a stream")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.register_script(scripts.ENSURE_GROUP)(args=[PREFIX])
