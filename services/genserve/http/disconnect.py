"""A client that goes away cancels the work it asked for.

Leaving a `genserve.client` stream or cancelling the task awaiting a unary call cancels the gRPC
call, and the gateway passes the cancellation on to the service, which stops decoding (or
dreaming, or optimising). So the HTTP side only has to notice the disconnect: it reads the ASGI
`receive` channel, which yields `http.disconnect` once the connection closes, beside the work,
and cancels the work when that comes first. It does not wait for the next write to fail, which
might be minutes away in a long silent computation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Mapping
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The HTTP client closed the connection before the answer was ready; the work was cancelled."""


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the client has closed the connection (the request body, if unread, is drained)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _first_of(work: Awaitable[T], receive: Receive) -> T:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Also reached when this coroutine itself is cancelled (server shutdown): nothing outlives it.
        for pending in (task, watcher):
            pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if not task.cancelled():
        return task.result()
    raise ClientDisconnected()


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, or ClientDisconnected once the client has gone (and `work` is cancelled).

    Call it after the request body has been read (FastAPI reads it before the endpoint runs).
    """
    return await _first_of(work, request.receive)


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` answer whose events stop, and whose iterator is closed, the moment the
    client disconnects, whatever ASGI version the server speaks.

    Closing the iterator runs its `finally` blocks, where a `genserve.client` stream cancels its
    gRPC call: so the decoding behind a stream stops with the reader.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], headers: Mapping[str, str] | None = None) -> None:
        # no-cache: proxies must not hold events back; X-Accel-Buffering: nginx passes each at once.
        fixed = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(events, 200, {**fixed, **(headers or {})}, self.media_type)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await _first_of(self.stream_response(send), receive)
        except ClientDisconnected:
            pass
        finally:
            # If the stream was stopped while it waited to send, the iterator is paused at a `yield`:
            # close it here, or its gRPC call would run on until garbage collection.
            await self.events.aclose()
