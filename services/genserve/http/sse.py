"""Server-sent events: the wire format of every stream the front door sends, and stream merging.

An event is `data: <one line of JSON>` followed by a blank line, optionally preceded by `id:` (a
client resumes after it with the `Last-Event-ID` header) and `event:` (its kind) lines. OpenAI's
streams end with the line `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, TypeVar, cast

T = TypeVar("T")

DONE = b"data: [DONE]\n\n"


def event(data: Any, *, kind: str = "", event_id: str = "") -> bytes:
    """One event carrying `data` as compact JSON (non-ASCII text as is: the stream is UTF-8)."""
    head = (f"id: {event_id}\n" if event_id else "") + (f"event: {kind}\n" if kind else "")
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


async def merged(streams: Sequence[AsyncIterator[T]]) -> AsyncGenerator[tuple[int, T], None]:
    """(position of the stream, item) from all `streams` as the items come.

    Each stream is read by a task of its own; the first failure ends the merge and is raised.
    Leaving the loop early (or a failure) cancels every task, which closes the streams (and so
    cancels their gRPC calls).
    """
    if len(streams) == 1:  # the common case, without a task in between
        try:
            async for item in streams[0]:
                yield 0, item
        finally:
            await _close(streams[0])
        return
    queue: asyncio.Queue[tuple[int, T | None, BaseException | None, bool]] = asyncio.Queue(maxsize=64)

    async def pump(position: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((position, item, None, False))
        except Exception as error:  # handed to the reader, which raises it
            await queue.put((position, None, error, True))
            return
        finally:
            await _close(stream)
        await queue.put((position, None, None, True))

    tasks = [asyncio.create_task(pump(position, stream)) for position, stream in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            position, received, error, finished = await queue.get()
            if error is not None:
                raise error
            if finished:
                running -= 1
            else:
                yield position, cast(T, received)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def started(streams: Sequence[AsyncIterator[T]]) -> list[AsyncIterator[T]]:
    """Wait until every stream has its first item (or has ended), all at once, and return streams
    that yield those items first. The first failure closes every stream and is raised: a request
    of several streams (prompts) is refused as a whole before anything is sent, whichever of its
    streams fails and however soon the others' first items come."""
    end = object()

    async def first(stream: AsyncIterator[T]) -> Any:
        return await anext(stream, end)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(first(stream)) for stream in streams]
    except BaseException as failure:  # a stream's failure (in the group), or this task cancelled
        await asyncio.gather(*(_close(stream) for stream in streams), return_exceptions=True)
        if isinstance(failure, BaseExceptionGroup):
            raise failure.exceptions[0] from None
        raise
    return [_resumed(task.result(), stream, end) for task, stream in zip(tasks, streams, strict=True)]


async def _resumed(item: Any, stream: AsyncIterator[T], end: object) -> AsyncGenerator[T, None]:
    try:
        if item is end:
            return
        yield cast(T, item)
        async for rest in stream:
            yield rest
    finally:
        await _close(stream)


async def _close(stream: AsyncIterator[Any]) -> None:
    """Close a generator that may be paused at a `yield` (its `finally` cancels its gRPC call)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
