"""The gRPC process's end of the decode process: starts it, sends it generations, routes its updates.

Runs on the text service's event loop and never imports torch (only the decode process does).
Each generation's updates land in that generation's asyncio queue; the decode process's
statistics land in this process's Prometheus metrics. If the decode process dies, every
generation in flight fails with UNAVAILABLE and the service shuts itself down (its supervisor
restarts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import grpc

from genserve.common.errors import RemoteError, Unavailable
from genserve.common.metrics import Metrics
from genserve.common.processes import StartError
from genserve.text.protocol import Cancel, DecodeConfig, ErrorReport, Failed, Ready, Stop, Submit, Updates

log = logging.getLogger(__name__)


def _run_decode_process(requests: Connection, updates: Connection, config: DecodeConfig) -> None:
    """The child's entry point: torch is imported there, never in the gRPC process."""
    from genserve.text.decode_process import decode_process_main

    decode_process_main(requests, updates, config)


class DecodeProcess:
    def __init__(self, config: DecodeConfig, metrics: Metrics, on_lost: Callable[[str], None]) -> None:
        self.config = config
        self.metrics = metrics
        self.on_lost = on_lost  # called once if the decode process dies while serving
        self.queues: dict[int, asyncio.Queue[object]] = {}
        self._ids = itertools.count(1)
        self._process: BaseProcess | None = None
        self._requests: Connection | None = None
        self._updates: Connection | None = None
        self._ready: asyncio.Future[Ready] | None = None
        self._stopping = False

    async def start(self) -> Ready:
        context = multiprocessing.get_context("spawn")  # never fork a process that runs gRPC
        request_reader, request_writer = context.Pipe(duplex=False)
        update_reader, update_writer = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_run_decode_process,
            args=(request_reader, update_writer, self.config),
            name="genserve-text-decode",
            daemon=True,
        )
        self._process.start()
        request_reader.close()
        update_writer.close()
        self._requests, self._updates = request_writer, update_reader
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        loop.add_reader(update_reader.fileno(), self._on_readable)
        return await self._ready

    def submit(self, message: Submit) -> None:
        assert self._requests is not None
        self._requests.send(message)

    def new_generation(self) -> tuple[int, asyncio.Queue[object]]:
        """A fresh generation id and the queue its outcomes (update lists or errors) will arrive on."""
        generation_id = next(self._ids)
        queue: asyncio.Queue[object] = asyncio.Queue()
        self.queues[generation_id] = queue
        return generation_id, queue

    def release(self, generation_id: int, cancel: bool) -> None:
        """The caller is done with a generation; `cancel` also stops its decoding."""
        self.queues.pop(generation_id, None)
        if cancel and self._requests is not None and not self._stopping:
            with contextlib.suppress(OSError):  # the decode process is gone: nothing left to stop
                self._requests.send(Cancel(generation_id))

    def _on_readable(self) -> None:
        assert self._updates is not None
        try:
            while self._updates.poll():
                self._handle(self._updates.recv())
        except (EOFError, OSError):
            self._lost()

    def _handle(self, message: object) -> None:
        if isinstance(message, Updates):
            for generation_id, item in message.outcomes:
                queue = self.queues.get(generation_id)
                if queue is not None:
                    queue.put_nowait(
                        RemoteError(grpc.StatusCode[item.code], item.message) if isinstance(item, ErrorReport) else item
                    )
            for stats in message.stats:
                stats.apply_to(self.metrics)
        elif isinstance(message, Ready) and self._ready is not None and not self._ready.done():
            for name in message.models:
                self.metrics.init_text_model(name)
            self._ready.set_result(message)
        elif isinstance(message, Failed) and self._ready is not None and not self._ready.done():
            self._ready.set_exception(StartError(f"text models could not be loaded: {message.message}"))

    def _lost(self) -> None:
        """The decode process's pipe closed: expected after Stop, fatal otherwise."""
        loop = asyncio.get_running_loop()
        assert self._updates is not None
        loop.remove_reader(self._updates.fileno())
        gone = Unavailable("the text decoder stopped; the service is restarting, retry shortly")
        for queue in self.queues.values():
            queue.put_nowait(gone)
        if self._ready is not None and not self._ready.done():
            code = self._process.exitcode if self._process else None
            self._ready.set_exception(StartError(f"the text decode process exited while loading (code {code})"))
            return
        if not self._stopping:
            code = self._process.exitcode if self._process else None
            self.on_lost(f"the text decode process died (exit code {code})")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        self._stopping = True
        if self._requests is not None:
            with contextlib.suppress(OSError):
                self._requests.send(Stop())
        if self._process is not None:
            await asyncio.to_thread(self._process.join, grace_seconds)
            if self._process.is_alive():
                self._process.kill()
