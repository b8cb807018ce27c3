"""API-key authentication and the gateway's admission limit.

Clients send `authorization: Bearer <key>` (or `x-api-key: <key>`). Keys come from
GENSERVE_API_KEYS as `key` or `name:key`; the caller's principal (the name, or a short hash of
an unnamed key) is forwarded to backends and owns what the caller creates. With no keys
configured the gateway is open and says so loudly at start-up. Health and reflection are never
gated, so probes and grpcurl work without a key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from genserve.common.caller import ANONYMOUS, PRINCIPAL_HEADER, current_principal
from genserve.common.config import ConfigError
from genserve.common.errors import FailedPrecondition, ResourceExhausted, Unauthenticated
from genserve.common.interceptors import WrappingInterceptor
from genserve.common.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiKey:
    principal: str
    secret: str


def parse_api_keys(spec: str) -> list[ApiKey]:
    """'alice:s3cret, b0b-key' → keys; an unnamed key's principal is a hash prefix of it."""
    keys = []
    for position, raw in enumerate(spec.split(","), start=1):
        item = raw.strip()
        if not item:
            continue
        name, sep, secret = item.partition(":")
        if not sep:
            name, secret = "key-" + hashlib.sha256(item.encode()).hexdigest()[:8], item
        if not name or not secret:
            # The entry itself is not echoed: it may hold most of a secret.
            raise ConfigError(
                f"GENSERVE_API_KEYS entry {position} has an empty name or key; each comma-separated entry "
                "must be 'key' or 'name:key'"
            )
        keys.append(ApiKey(name, secret))
    return keys


class Gatekeeper(WrappingInterceptor):
    """Authenticates every public call and bounds how many run at once."""

    def __init__(self, keys: list[ApiKey], max_concurrent: int, metrics: Metrics) -> None:
        self.keys = keys
        self.max_concurrent = max_concurrent
        self.metrics = metrics
        self.in_flight = 0
        if not keys:
            log.warning(
                "GENSERVE_API_KEYS is empty: the gateway accepts calls WITHOUT authentication. "
                "Set GENSERVE_API_KEYS before exposing it beyond this machine."
            )

    def authenticate(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
        if not self.keys:
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
        for api_key in self.keys:
            if hmac.compare_digest(api_key.secret.encode(), presented.encode()):
                return api_key.principal
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
