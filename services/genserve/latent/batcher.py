"""Stacks concurrent decode requests into shared forward passes, and splits the results back.

Requests wait at most `max_wait` seconds for company (and not at all when a pass is already
running: they ride the next one), up to `max_batch` latent rows per pass, one model per pass.
Each request's rows stay contiguous and in order, so its images never mix with another's. The
random draws happen before a request is queued, so a seed gives the same points whatever batch
the request joins; the network itself is evaluated row by row identically in any batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

Output = TypeVar("Output")


@dataclass(eq=False)  # compared by identity: the tensors have no truth value
class _Pending(Generic[Output]):
    model: str
    rows: torch.Tensor
    future: asyncio.Future[list[Output]]


class DecodeBatcher(Generic[Output]):
    """`run(model, rows) -> one output per row`, called on `executor` with stacked rows of many requests."""

    def __init__(
        self,
        run: Callable[[str, torch.Tensor], list[Output]],
        executor: Executor,
        max_batch: int,
        max_wait: float,
        enabled: bool = True,
        on_batch: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.run = run
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.enabled = enabled
        self.on_batch = on_batch  # (model, requests, rows) of each pass, for metrics
        self.pending: list[_Pending[Output]] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def decode(self, model: str, rows: torch.Tensor) -> list[Output]:
        loop = asyncio.get_running_loop()
        if not self.enabled:
            outputs = await loop.run_in_executor(self.executor, self.run, model, rows)
            if self.on_batch is not None:
                self.on_batch(model, 1, rows.shape[0])
            return outputs
        if self.task is None:
            self.task = asyncio.create_task(self._loop())
        future: asyncio.Future[list[Output]] = loop.create_future()
        self.pending.append(_Pending(model, rows, future))
        self.wake.set()
        return await future

    def _take(self) -> list[_Pending[Output]]:
        """The oldest request's model: its requests in arrival order, up to max_batch rows (at least one)."""
        live = [p for p in self.pending if not p.future.done()]
        if not live:
            self.pending = []
            return []
        model = live[0].model
        batch: list[_Pending[Output]] = []
        rows = 0
        for item in live:
            if item.model != model:
                continue
            if batch and rows + item.rows.shape[0] > self.max_batch:
                break
            batch.append(item)
            rows += item.rows.shape[0]
        self.pending = [p for p in live if p not in batch]
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                self.wake.clear()
                await self.wake.wait()
            # A short wait for company, cut short once a full batch is there.
            deadline = loop.time() + self.max_wait
            while sum(p.rows.shape[0] for p in self.pending) < self.max_batch and loop.time() < deadline:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            try:
                await self._run_batch(loop, batch)
            except Exception as error:  # a bug here must not leave callers waiting forever
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: Sequence[_Pending[Output]]) -> None:
        stacked = torch.cat([item.rows for item in batch])
        try:
            outputs = await loop.run_in_executor(self.executor, self.run, batch[0].model, stacked)
        except Exception as error:  # every request of the pass gets the failure
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        if self.on_batch is not None:
            self.on_batch(batch[0].model, len(batch), stacked.shape[0])
        start = 0
        for item in batch:
            count = item.rows.shape[0]
            if not item.future.done():
                item.future.set_result(outputs[start : start + count])
            start += count

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
