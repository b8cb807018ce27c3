"""API-key authentication and the gateway's admission limit.

Clients send `authorization: Bearer <key>` (or `x-api-key: <key>`). Keys come from
GENSERVE_API_KEYS as `key` or `name:key`, and from GENSERVE_API_KEYS_FILE (one per line), a file
read again when it changes so a rotated Secret takes effect without a restart. The caller's
principal (the name, or a short hash of an unnamed key) is forwarded to backends and owns what
the caller creates. With no keys configured the gateway is open and says so loudly at start-up.
Health and reflection are never gated, so probes and grpcurl work without a key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from genserve.common.caller import ANONYMOUS, PRINCIPAL_HEADER, current_principal
from genserve.common.config import ConfigError
from genserve.common.errors import FailedPrecondition, ResourceExhausted, Unauthenticated
from genserve.common.interceptors import WrappingInterceptor
from genserve.common.metrics import Metrics
from genserve.common.watched_file import WatchedFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiKey:
    principal: str
    # Only a digest is kept: equal-length digests compare in constant time whatever the key lengths.
    digest: bytes


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _parse_entry(item: str, where: str) -> ApiKey:
    name, sep, secret = item.partition(":")
    if not sep:
        name, secret = "key-" + hashlib.sha256(item.encode()).hexdigest()[:8], item
    if not name or not secret:
        # The entry itself is not echoed: it may hold most of a secret.
        raise ConfigError(f"{where} has an empty name or key; each entry must be 'key' or 'name:key'")
    return ApiKey(name, _digest(secret))


def parse_api_keys(spec: str) -> list[ApiKey]:
    """'alice:s3cret, b0b-key' → keys; an unnamed key's principal is a hash prefix of it."""
    entries = [(position, raw.strip()) for position, raw in enumerate(spec.split(","), start=1)]
    return [_parse_entry(item, f"GENSERVE_API_KEYS entry {position}") for position, item in entries if item]


def read_keys_file(path: Path) -> list[ApiKey]:
    """One `key` or `name:key` per line; blank lines and `#` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"GENSERVE_API_KEYS_FILE {path} cannot be read: {error}") from None
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.strip()
        if item and not item.startswith("#"):
            keys.append(_parse_entry(item, f"GENSERVE_API_KEYS_FILE {path} line {number}"))
    return keys


class KeyRing:
    """The keys that are valid now: the fixed ones plus those of the keys file as it reads today."""

    def __init__(self, spec: str, keys_file: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.fixed = parse_api_keys(spec)
        # A missing or malformed file at start-up is a configuration error, not an open gateway.
        self.keys_file = WatchedFile(Path(keys_file), read_keys_file, "API keys file", clock) if keys_file else None

    @property
    def enabled(self) -> bool:
        """Authentication is on once any key source is configured, even if the file is empty now."""
        return bool(self.fixed) or self.keys_file is not None

    def current(self) -> list[ApiKey]:
        return [*self.fixed, *(self.keys_file.current() if self.keys_file is not None else [])]


class Gatekeeper(WrappingInterceptor):
    """Authenticates every public call and bounds how many run at once."""

    def __init__(self, keys: KeyRing, max_concurrent: int, metrics: Metrics) -> None:
        self.key_ring = keys
        self.max_concurrent = max_concurrent
        self.metrics = metrics
        self.in_flight = 0
        if not keys.enabled:
            log.warning(
                "GENSERVE_API_KEYS and GENSERVE_API_KEYS_FILE are empty: the gateway accepts calls WITHOUT "
                "authentication. Set one of them before exposing it beyond this machine."
            )

    def authenticate(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
        if not self.key_ring.enabled:
            return ANONYMOUS
        presented = None
        for key, value in metadata or ():
            text = value.decode() if isinstance(value, bytes) else value
            if key == "authorization" and text.lower().startswith("bearer "):
                presented = text[7:].strip()
            elif key == "x-api-key":
                presented = text.strip()
        if presented is None:
            self.metrics.auth_failures.labels("missing").inc()
            raise Unauthenticated("missing API key: send metadata 'authorization: Bearer <key>' or 'x-api-key: <key>'")
        digest = _digest(presented)
        principal = None
        # Every key is compared, so the time taken does not tell which one (or how much of one) matched.
        for api_key in self.key_ring.current():
            if hmac.compare_digest(api_key.digest, digest) and principal is None:
                principal = api_key.principal
        if principal is not None:
            return principal
        self.metrics.auth_failures.labels("invalid").inc()
        raise Unauthenticated("invalid API key")

    def _admit(self, context: grpc.aio.ServicerContext) -> None:
        metadata = context.invocation_metadata()
        if any(key == PRINCIPAL_HEADER for key, _ in metadata or ()):
            # Only a gateway sets this header, on calls to backends: a gateway whose backend address
            # leads back to a gateway would otherwise forward to itself until the call limit.
            raise FailedPrecondition(
                f"this call came from a gateway ({PRINCIPAL_HEADER} is set): a backend address "
                "(GENSERVE_*_ADDR) of that gateway points at a gateway instead of a backend service"
            )
        principal = self.authenticate(metadata)
        if self.in_flight >= self.max_concurrent:
            raise ResourceExhausted(
                f"the gateway is at its limit of {self.max_concurrent} concurrent calls; retry later"
            )
        self.in_flight += 1
        # Each RPC runs in its own task and context, so the value dies with the call.
        current_principal.set(principal)

    @contextlib.asynccontextmanager
    async def around(self, service: str, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        self._admit(context)
        try:
            yield
        finally:
            self.in_flight -= 1
