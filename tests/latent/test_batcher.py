"""The decode batcher: shared passes, outputs never mixed, failures and cancellations contained."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from genserve.latent.batcher import DecodeBatcher


def make(
    enabled: bool = True, max_batch: int = 64, fail: bool = False
) -> tuple[DecodeBatcher[float], list[tuple[str, int]]]:
    passes: list[tuple[str, int]] = []
    lock = threading.Lock()

    def run(model: str, rows: torch.Tensor) -> list[float]:
        time.sleep(0.01)  # a fixed wait on purpose: a forward pass takes time, and others queue meanwhile
        if fail:
            raise RuntimeError("boom")
        with lock:
            passes.append((model, rows.shape[0]))
        return rows[:, 0].tolist()

    return DecodeBatcher(run, ThreadPoolExecutor(1), max_batch, 0.005, enabled=enabled), passes


def test_concurrent_requests_share_passes_and_get_their_own_rows_back() -> None:
    batcher, passes = make()

    async def main() -> list[list[float]]:
        requests = [torch.full((1 + i % 3, 4), float(i)) for i in range(40)]
        return await asyncio.gather(*(batcher.decode("m", rows) for rows in requests))

    results = asyncio.run(main())
    assert results == [[float(i)] * (1 + i % 3) for i in range(40)]
    assert len(passes) < 10 and sum(rows for _, rows in passes) == sum(1 + i % 3 for i in range(40))
    assert max(rows for _, rows in passes) <= 64


def test_one_model_per_pass() -> None:
    batcher, passes = make()

    async def main() -> list[list[float]]:
        return await asyncio.gather(*(batcher.decode(f"m{i % 2}", torch.full((1, 2), float(i))) for i in range(10)))

    assert asyncio.run(main()) == [[float(i)] for i in range(10)]
    assert {model for model, _ in passes} == {"m0", "m1"}


def test_without_batching_every_request_runs_alone() -> None:
    batcher, passes = make(enabled=False)

    async def main() -> list[list[float]]:
        return await asyncio.gather(*(batcher.decode("m", torch.full((2, 1), float(i))) for i in range(6)))

    assert asyncio.run(main()) == [[float(i)] * 2 for i in range(6)]
    assert [rows for _, rows in passes] == [2] * 6


def test_a_failed_pass_fails_its_requests_and_a_cancelled_one_leaves_the_rest() -> None:
    failing, _ = make(fail=True)

    async def failed() -> None:
        await failing.decode("m", torch.zeros(1, 1))

    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(failed())

    batcher, _ = make()

    async def cancelled() -> list[float]:
        doomed = asyncio.ensure_future(batcher.decode("m", torch.zeros(1, 1)))
        survivor = asyncio.ensure_future(batcher.decode("m", torch.ones(1, 1)))
        await asyncio.sleep(0)  # one turn of the loop, not a wait: both requests are queued by then
        doomed.cancel()
        return await survivor

    assert asyncio.run(cancelled()) == [1.0]
