"""Redis clients as every process makes them: bounded timeouts, and retries that ride out a restart.

A Redis restart (AOF on) closes every connection; the retries reconnect within a few seconds,
so a call that arrives meanwhile waits instead of failing.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

RETRIES = 6  # 0.05 s doubling to 1 s: about 3 s in all
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
RETRY_ON = [RedisConnectionError, RedisTimeoutError]


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES),
        retry_on_error=RETRY_ON,
    )


def async_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES),
        retry_on_error=RETRY_ON,
    )


def redacted(url: str) -> str:
    """The URL as logs and messages may show it: any password replaced by ***."""
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}:***@{location}" if colon else f"{scheme}://***@{location}"


def text_of(value: bytes | str | None) -> str:
    """A Redis reply (bytes, or str from a decoding client) as str; None as ""."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
