"""Requests counted by route template, method and status; their durations; those in flight.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware, which would buffer streams and hide
disconnects). It sees the status the answer started with, and whether the client left before
the last byte: such a request is counted as 499 whatever status it had started with.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genserve.common.metrics import HttpMetrics

UNMATCHED = "unmatched"


def route_of(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template of the route serving `scope` ("/v1/models/{model}"), else "unmatched"."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", UNMATCHED))
    return UNMATCHED


class RecordMetrics:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, method = route_of(self.routes, scope), scope["method"]
        status = 500  # if the application fails before answering, the server answers 500
        complete = False
        gone = False

        async def watched_receive() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and not complete:
                gone = True
            return message

        async def recorded_send(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        in_flight = self.metrics.in_flight.labels(route, method)
        in_flight.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, watched_receive, recorded_send)
        finally:
            in_flight.dec()
            self.metrics.request_seconds.labels(route, method).observe(time.perf_counter() - started)
            self.metrics.requests.labels(route, method, "499" if gone else str(status)).inc()
