"""Stream helpers of the front door, without servers: a request of several streams is refused as a
whole when any of them fails before its first item, however soon the others' first items come."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from genserve.http.sse import merged, started


class Refused(Exception):
    pass


def test_a_late_refusal_of_one_stream_refuses_them_all_and_closes_the_others() -> None:
    closed: list[str] = []

    async def quick() -> AsyncGenerator[str, None]:
        try:
            yield "first piece"
            await asyncio.sleep(10)
            yield "never"
        finally:
            closed.append("quick")

    async def refused() -> AsyncGenerator[str, None]:
        await asyncio.sleep(0.05)  # its refusal comes after the other stream's first piece
        raise Refused("prompt[1]: unknown character")
        yield "never"

    with pytest.raises(Refused, match=r"prompt\[1\]"):
        asyncio.run(started([quick(), refused()]))
    assert closed == ["quick"]


def test_started_streams_give_their_first_items_again_then_the_rest() -> None:
    async def items(*values: str) -> AsyncGenerator[str, None]:
        for value in values:
            await asyncio.sleep(0)
            yield value

    async def run() -> list[tuple[int, str]]:
        streams = await started([items("a1", "a2"), items(), items("c1")])
        return [item async for item in merged(streams)]

    received = asyncio.run(run())
    assert sorted(received) == [(0, "a1"), (0, "a2"), (2, "c1")]
