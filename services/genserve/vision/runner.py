"""Blocking torch work off the event loop, a fixed number at a time, with a bounded wait queue.

Each piece of work runs on the runner's own thread(s) (all torch work of the process stays on
them, see text/decode_loop.py for why) and streams what it emits back to the caller's event loop.
The caller leaving (cancel, deadline) sets the work's cancel flag; work checks it every step and
stops. A slot is released when the work has really stopped, not when its caller left.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from genserve.common.devices import configure_torch
from genserve.common.errors import Cancelled, ResourceExhausted
from genserve.common.metrics import Metrics

Emit = Callable[[object], None]
Work = Callable[[Emit, threading.Event], None]


@dataclass(frozen=True)
class _End:
    error: BaseException | None = None


def check_cancelled(cancel: threading.Event) -> None:
    """Called by work at every step: stop at once when the caller has gone."""
    if cancel.is_set():
        raise Cancelled("the request was cancelled")


class TorchRunner:
    def __init__(self, service: str, concurrency: int, max_waiting: int, torch_threads: int, metrics: Metrics) -> None:
        self.service = service
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=f"{service}-torch", initializer=configure_torch,
            initargs=(torch_threads,),
        )  # fmt: skip
        self.admitted = 0  # running + waiting, touched on the event loop only
        self.running = 0

    def _gauges(self) -> None:
        self.metrics.work_running.labels(self.service).set(self.running)
        self.metrics.work_waiting.labels(self.service).set(self.admitted - self.running)

    async def stream(self, work: Work) -> AsyncIterator[object]:
        """Admit `work`, run it, and yield what it emits until it returns or raises."""
        limit = self.concurrency + self.max_waiting
        if self.admitted >= limit:
            raise ResourceExhausted(
                f"the {self.service} service is busy: {self.concurrency} running and {self.max_waiting} waiting "
                f"is its limit (GENSERVE_{self.service.upper()}_CONCURRENCY / _MAX_WAITING); retry later"
            )
        self.admitted += 1
        self._gauges()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def started(running: bool) -> None:
            self.running += 1 if running else -1
            self._gauges()

        def run() -> None:
            if cancel.is_set():  # the caller left while this waited for a slot
                return
            loop.call_soon_threadsafe(started, True)
            try:
                work(emit, cancel)
                emit(_End())
            except BaseException as error:  # handed to the caller, who maps it to a status
                emit(_End(error))
            finally:
                loop.call_soon_threadsafe(started, False)

        def finished(_: object) -> None:
            self.admitted -= 1
            self._gauges()

        future = loop.run_in_executor(self.executor, run)
        future.add_done_callback(finished)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            cancel.set()  # no-op after the end; stops the work at its next step otherwise

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
