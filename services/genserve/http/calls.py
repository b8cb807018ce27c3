"""What each route needs to call the gateway for one HTTP request: the caller's key and deadline.

@router.post("/v1/things")
async def things(body: ThingRequest, call: Call) -> ...:
    result = await call.client.do_thing(..., timeout=call.timeout)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from genserve.client import AsyncClient
from genserve.common.config import HttpSettings
from genserve.common.metrics import HttpMetrics
from genserve.http.auth import api_key_of
from genserve.http.errors import ApiError, ErrorContext

# Seconds the caller allows for the whole request; becomes the gRPC call's deadline.
TIMEOUT_HEADER = "X-Genserve-Timeout"


@dataclass
class FrontDoor:
    """The process-wide state of the HTTP role (kept in `app.state.front`)."""

    settings: HttpSettings
    metrics: HttpMetrics
    # Made in the server's event loop at start-up (lifespan), closed at shutdown.
    client: AsyncClient | None = None
    errors: ErrorContext = field(init=False)

    def __post_init__(self) -> None:
        self.errors = ErrorContext(self.settings.gateway_addr, self.settings.retry_after_seconds)


def front_door(request: Request) -> FrontDoor:
    front: FrontDoor = request.app.state.front
    return front


@dataclass(frozen=True)
class GatewayCall:
    """A gateway client that sends this request's API key, and the seconds its call may take."""

    client: AsyncClient
    timeout: float


def timeout_of(request: Request, default: float) -> float:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        message = f"{TIMEOUT_HEADER} must be a positive number of seconds, got {raw!r}"
        raise ApiError(400, message, param=TIMEOUT_HEADER, code="invalid_timeout")
    return seconds


def gateway_call(request: Request) -> GatewayCall:
    """FastAPI dependency: the shared channel, viewed with the caller's key (no new connection)."""
    front = front_door(request)
    if front.client is None:
        raise ApiError(503, "the HTTP front door is still starting; retry shortly", code="unavailable")
    key = api_key_of(request)
    timeout = timeout_of(request, front.settings.default_timeout_seconds)
    return GatewayCall(front.client.with_api_key(key), timeout)


# The parameter type of a route that calls the gateway: `async def route(..., call: Call)`.
Call = Annotated[GatewayCall, Depends(gateway_call)]
