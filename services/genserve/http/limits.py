"""The request-body size limit (GENSERVE_HTTP_MAX_BODY_BYTES), checked before a body is parsed.

A declared Content-Length over the limit is refused at once; a body sent without one (chunked)
is counted as it arrives and refused as soon as it passes the limit, so no oversized body is
ever held whole in memory.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genserve.http.errors import ApiError


class BodyTooLarge(HTTPException):
    """Raised while the body is read. An HTTPException, so the body parser passes it on unchanged
    and the error handlers answer 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit))


def too_large_message(limit: int) -> str:
    return f"the request body is larger than {limit} bytes, the most allowed (GENSERVE_HTTP_MAX_BODY_BYTES)"


class LimitBody:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = ApiError(413, too_large_message(self.max_bytes), code="body_too_large")
            await error.response()(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted_receive, send)
