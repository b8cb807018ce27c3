"""The decode process: a child process of the text service that owns the models and decodes.

Why a process of its own: the gRPC side runs Python for every message it sends, and sharing one
interpreter lock with the decoding loop stalls the loop each time it needs the lock back between
torch ops (measured here: a Python thread busy 30% of the time cut 32-way decoding from 9.0k to
5.7k tokens/s). The same split is what vLLM's separate API-server process does.

What the two processes say to each other is in protocol.py; decode_client.py is the other end.
"""

from __future__ import annotations

import logging
import threading
import time
from multiprocessing.connection import Connection

from genserve.common.config import ConfigError
from genserve.common.devices import configure_torch, pick_device
from genserve.common.errors import GenserveError
from genserve.common.model_store import ModelStore, ModelStoreError
from genserve.common.processes import die_with_parent
from genserve.common.server import configure_logging
from genserve.text.checkpoint import load_checkpoint
from genserve.text.decode_loop import DecodeLoop
from genserve.text.engine import DecodeEngine, Delivery, Generation
from genserve.text.protocol import (
    Cancel,
    DecodeConfig,
    ErrorReport,
    Failed,
    ModelDescription,
    Outcome,
    Ready,
    Stop,
    Submit,
    Updates,
)

log = logging.getLogger(__name__)

STATS_INTERVAL_SECONDS = 0.2


def load_engines(config: DecodeConfig, wake: threading.Condition) -> tuple[dict[str, DecodeEngine], Ready]:
    """Load the selected text models (verifying their sha256) and build their engines."""
    store = ModelStore(config.model_store)
    device = pick_device(config.device)
    engines: dict[str, DecodeEngine] = {}
    descriptions: dict[str, ModelDescription] = {}
    for entry in config.selection.entries:
        checkpoint = load_checkpoint(store.verified_path(entry), device)
        engines[entry.name] = DecodeEngine(
            entry.name,
            checkpoint.model,
            checkpoint.vocab,
            device,
            wake,
            max_batch=config.max_batch,
            max_waiting=config.max_waiting,
            onednn_min_batch=config.onednn_min_batch,
            stream_messages_per_second=config.stream_max_messages,
        )
        details = {"vocab_size": str(checkpoint.vocab.size)}
        details.update({k: str(v) for k, v in checkpoint.model.config.__dict__.items() if k != "vocab_size"})
        descriptions[entry.name] = ModelDescription(
            entry, checkpoint.vocab, checkpoint.architecture, str(device), details
        )
    return engines, Ready(descriptions, config.selection.default)


class Outbox:
    """Outcomes collected during a tick, sent as one `Updates` message after it."""

    def __init__(self, connection: Connection, engines: list[DecodeEngine]) -> None:
        self.connection = connection
        self.engines = engines
        self.lock = threading.Lock()
        self.pending: list[tuple[int, Outcome]] = []
        self.stats_sent = 0.0

    def add(self, generation_id: int, outcome: Outcome) -> None:
        with self.lock:
            self.pending.append((generation_id, outcome))

    def send_now(self) -> None:
        """Send the outcomes delivered so far in this tick (before its forward pass)."""
        self.flush(idle=False)

    def flush(self, idle: bool) -> None:
        now = time.monotonic()
        if not self.pending and not idle and now - self.stats_sent < STATS_INTERVAL_SECONDS:
            # Most steps deliver nothing: they skip the lock (an outcome added meanwhile goes next step).
            return  # statistics ride along with outcomes, go alone a few times a second, and before idling
        with self.lock:
            outcomes, self.pending = self.pending, []
        self.stats_sent = now
        stats = [drained for engine in self.engines if (drained := engine.drain_stats()) is not None]
        if outcomes or stats:
            self.connection.send(Updates(outcomes, stats))


class GenerationTable:
    """The decode process's live generations: id → generation, forgotten once finished, failed or cancelled."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.generations: dict[int, Generation] = {}
        self.lock = threading.Lock()

    def make(self, message: Submit) -> Generation:
        remaining = len(message.spec.completions)
        generation_id = message.generation_id

        def deliver(item: Delivery) -> None:
            nonlocal remaining
            if isinstance(item, BaseException):
                self.outbox.add(generation_id, ErrorReport.of(item))
                self.forget(generation_id)
                return
            self.outbox.add(generation_id, item)
            remaining -= sum(1 for update in item if update.finish is not None)
            if remaining == 0:
                self.forget(generation_id)

        generation = Generation(message.spec, deliver)
        with self.lock:
            self.generations[generation_id] = generation
        return generation

    def forget(self, generation_id: int) -> Generation | None:
        with self.lock:
            return self.generations.pop(generation_id, None)


def _read_requests(
    requests: Connection, engines: dict[str, DecodeEngine], table: GenerationTable, loop: DecodeLoop
) -> None:
    """Reader thread: turn the gRPC process's messages into engine calls (no torch work here)."""
    try:
        while True:
            message = requests.recv()
            if isinstance(message, Submit):
                generation = table.make(message)
                try:
                    engines[message.model].submit(generation)
                except GenserveError as error:
                    generation.deliver(error)
                    loop.poke()  # the refusal goes out now, even if the loop is idle
            elif isinstance(message, Cancel):
                cancelled = table.forget(message.generation_id)
                if cancelled is not None:
                    cancelled.cancel()
            elif isinstance(message, Stop):
                break
    except (EOFError, OSError):
        log.warning("text decode process: the gRPC process went away; stopping")
    loop.stop()


def decode_process_main(requests: Connection, updates: Connection, config: DecodeConfig) -> None:
    """Entry point of the decode process (multiprocessing, spawn)."""
    die_with_parent()
    configure_logging(config.log_level)
    configure_torch(config.torch_threads)
    loop = DecodeLoop()
    try:
        engines, ready = load_engines(config, loop.wake)
    except Exception as error:  # reported to the parent, which fails its start-up with it
        known = isinstance(error, GenserveError | ModelStoreError | ConfigError)  # their messages say it all
        updates.send(Failed(str(error) if known else repr(error)))
        return
    updates.send(ready)
    outbox = Outbox(updates, list(engines.values()))
    for engine in engines.values():
        engine.on_dispatched = outbox.send_now
    table = GenerationTable(outbox)
    threading.Thread(target=_read_requests, args=(requests, engines, table, loop), daemon=True).start()
    loop.run(list(engines.values()), after_tick=outbox.flush)
    updates.close()
