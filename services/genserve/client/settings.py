"""What the sync and asyncio clients share: connection settings, the retry policy, the key header."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Images and latent batches can be large; the gateway's own limits are what bound them.
MESSAGE_LIMIT = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
]


@dataclass(frozen=True)
class Retry:
    """How calls that are safe to repeat are retried after UNAVAILABLE.

    Safe to repeat: the reads (list/describe models, list concepts, get/list jobs, job results),
    cancelling a job, a job submit that carries an idempotency key, and watching a job (resumed
    after its last event). Generation calls (text, dream, style preview, latent) and concept
    creation or deletion are never repeated: they may have run, or changed state, before the
    connection broke, so the caller decides. A call is retried at most `attempts` more times in a
    row, after `delay`, `delay × multiplier`, ... seconds (at most `max_delay`), each pause
    followed by up to `ready_wait` seconds of waiting for the connection to come back; a call's
    deadline bounds its retries too.
    """

    attempts: int = 5
    delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 10.0
    ready_wait: float = 5.0

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row (1-based)."""
        return float(min(self.max_delay, self.delay * self.multiplier ** (failures - 1)))


# Called before each reconnect of `watch_job`: (why, failures in a row, the most allowed).
ReconnectHook = Callable[[str, int, int], None]


def key_metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    """The header the gateway reads the API key from (see gateway/auth.py)."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def tls_options(server_name: str) -> list[tuple[str, object]]:
    """Channel options of a TLS channel that checks the certificate for `server_name`."""
    return [*CHANNEL_OPTIONS, *([("grpc.ssl_target_name_override", server_name)] if server_name else [])]
