"""`genserve.client.AsyncClient` against the real stack: the main families, errors, and a resumed watch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import pytest
from PIL import Image

from genserve.client import AsyncClient, JobState, NotFound, Unauthenticated
from tests.client.conftest import API_KEY, LATENT_MODEL, CuttableProxy, Stack

T = TypeVar("T")


def run(stack: Stack, scenario: Callable[[AsyncClient], Awaitable[T]], address: str = "", key: str = API_KEY) -> T:
    """Run `scenario` on a fresh event loop with a client made inside it (bounded in time)."""

    async def main() -> T:
        async with AsyncClient(address or stack.gateway.address, api_key=key, timeout=60) as client:
            return await asyncio.wait_for(scenario(client), 120)

    return asyncio.run(main())


def test_text_unary_and_stream_agree(stack: Stack) -> None:
    async def scenario(client: AsyncClient) -> tuple[str, str]:
        whole = await client.generate("ROMEO:", max_tokens=20, seed=5)
        pieces = [piece.text async for piece in client.generate_stream("ROMEO:", max_tokens=20, seed=5)]
        return whole.text, "".join(pieces)

    whole, streamed = run(stack, scenario)
    assert len(whole) == 20 and streamed == whole


def test_dream_latent_and_models(stack: Stack, photo: Image.Image) -> None:
    async def scenario(client: AsyncClient) -> None:
        dream = await client.dream(photo, octaves=1, steps_per_octave=2, seed=1, max_size=32)
        assert max(dream.width, dream.height) == 32 and dream.image().size == (dream.width, dream.height)
        drawn = await client.sample(2, model=LATENT_MODEL, seed=4, return_latents=True)
        decoded = await client.decode(drawn.latents, model=LATENT_MODEL)
        assert [i.png for i in decoded.images] == [i.png for i in drawn.images]
        assert drawn.latents.shape == (2, 16) and drawn.latents.dtype == np.float32
        families = {model.family for model in await client.list_models()}
        assert {"text", "vision", "latent"} <= families
        with pytest.raises(NotFound):
            await client.describe_model("no-such-model")

    run(stack, scenario)


def test_a_wrong_key_is_unauthenticated(stack: Stack) -> None:
    async def scenario(client: AsyncClient) -> None:
        with pytest.raises(Unauthenticated):
            await client.list_models()

    run(stack, scenario, key="wrong-key")


def test_a_cut_watch_stream_resumes_in_order(stack: Stack, photo: Image.Image, painting: Image.Image) -> None:
    proxy = CuttableProxy(stack.gateway.address)
    reconnects: list[str] = []

    async def scenario(client: AsyncClient) -> tuple[str, list[str]]:
        job = await client.submit_style_transfer(photo, painting, iterations=30, max_size=40, idempotency_key="aio")
        seen = []
        async for event in client.watch_job(job.id, on_reconnect=lambda reason, *_: reconnects.append(reason)):
            seen.append(event.event_id)
            if len(seen) == 3:
                assert proxy.cut() > 0
        result = await client.get_job_result(job.id)
        assert max(result.image.width, result.image.height) == 40
        return job.id, seen

    try:
        job_id, seen = run(stack, scenario, address=proxy.address)
    finally:
        proxy.close()

    async def history(client: AsyncClient) -> list[str]:
        assert (await client.get_job(job_id)).state == JobState.SUCCEEDED
        return [event.event_id async for event in client.watch_job(job_id)]

    assert reconnects and seen == run(stack, history) and len(set(seen)) == len(seen)
