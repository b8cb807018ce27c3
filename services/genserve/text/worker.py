"""The decode worker: a child process of the text service that owns the models and decodes.

Why a process of its own: the gRPC side runs Python for every message it sends, and sharing one
interpreter lock with the decoding loop stalls the loop each time it needs the lock back between
torch ops (measured here: a Python thread busy 30% of the time cut 32-way decoding from 9.0k to
5.7k tokens/s). The same split is what vLLM's separate API-server process does.

Protocol, over two one-way pipes between the two processes of one service (pickled dataclasses;
this is not a trust boundary): the parent sends `Submit`, `Cancel` and `Stop`; the worker answers
`Ready` (or `Failed`) once, then one `Updates` per decoding tick that produced anything.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import grpc

from genserve.common.devices import configure_torch, pick_device
from genserve.common.errors import GenserveError, NotFound
from genserve.common.model_store import ModelEntry, ModelStore
from genserve.common.processes import die_with_parent
from genserve.common.server import configure_logging
from genserve.text.checkpoint import load_checkpoint
from genserve.text.decode_loop import DecodeLoop
from genserve.text.engine import CompletionSpec, CompletionUpdate, DecodeEngine, GenerationJob
from genserve.text.engine_stats import StatsBuffer
from genserve.text.vocab import CharVocab

log = logging.getLogger(__name__)

STATS_INTERVAL_SECONDS = 0.2


@dataclass(frozen=True)
class WorkerConfig:
    model_store: Path
    models: str  # comma-separated names; empty = every text model in the store
    default_model: str  # empty = lowest validation loss
    device: str
    torch_threads: int
    max_batch: int
    max_waiting: int
    onednn_min_batch: int
    stream_max_messages: float = 0.0
    log_level: str = "INFO"


@dataclass(frozen=True)
class ModelDescription:
    """What the gRPC side needs to validate requests and describe a model; no weights."""

    entry: ModelEntry
    vocab: CharVocab
    architecture: str
    device: str
    details: dict[str, str]


# --- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submit:
    job_id: int
    model: str
    prompt_ids: list[int]
    specs: list[CompletionSpec]
    max_tokens: int
    stop: tuple[str, ...]
    logprobs: bool
    top_logprobs: int
    incremental: bool
    flush_interval: float


@dataclass(frozen=True)
class Cancel:
    job_id: int


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Ready:
    models: dict[str, ModelDescription]
    default: str


@dataclass(frozen=True)
class Failed:
    message: str


@dataclass(frozen=True)
class ErrorReport:
    """A GenserveError, flattened: its status code name and message."""

    code: str
    message: str

    @classmethod
    def of(cls, error: BaseException) -> ErrorReport:
        if isinstance(error, GenserveError):
            return cls(error.code.name, error.message)
        return cls(grpc.StatusCode.INTERNAL.name, "internal error")


Delivery = list[CompletionUpdate] | ErrorReport


@dataclass(frozen=True)
class Updates:
    deliveries: list[tuple[int, Delivery]]
    stats: list[StatsBuffer] = field(default_factory=list)


# --- worker side ------------------------------------------------------------------------------


def load_engines(config: WorkerConfig, wake: threading.Condition) -> tuple[dict[str, DecodeEngine], Ready]:
    """Load the configured text models (verifying their sha256) and build their engines."""
    store = ModelStore(config.model_store)
    device = pick_device(config.device)
    entries = {e.name: e for e in store.entries_of("text")}
    wanted = [name.strip() for name in config.models.split(",") if name.strip()] or sorted(entries)
    missing = [name for name in wanted if name not in entries]
    if missing:
        raise NotFound(f"text models not in {store.manifest_path}: {missing}; available: {sorted(entries)}")
    if not wanted:
        raise NotFound(f"no text models in {store.manifest_path}; train one with `genserve train text`")
    engines: dict[str, DecodeEngine] = {}
    descriptions: dict[str, ModelDescription] = {}
    for name in wanted:
        entry = entries[name]
        checkpoint = load_checkpoint(store.verified_path(entry), device)
        engines[name] = DecodeEngine(
            name,
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
        descriptions[name] = ModelDescription(entry, checkpoint.vocab, checkpoint.architecture, str(device), details)
    default = config.default_model or min(
        wanted, key=lambda n: entries[n].metrics.get("val_loss_nats_per_char", math.inf)
    )
    if default not in engines:
        raise NotFound(f"GENSERVE_TEXT_DEFAULT_MODEL={default!r} is not loaded; loaded: {sorted(engines)}")
    return engines, Ready(descriptions, default)


class Outbox:
    """Deliveries collected during a tick, sent as one message after it."""

    def __init__(self, connection: Connection, engines: list[DecodeEngine]) -> None:
        self.connection = connection
        self.engines = engines
        self.lock = threading.Lock()
        self.pending: list[tuple[int, Delivery]] = []
        self.stats_sent = 0.0

    def add(self, job_id: int, item: Delivery) -> None:
        with self.lock:
            self.pending.append((job_id, item))

    def flush(self, idle: bool) -> None:
        with self.lock:
            deliveries, self.pending = self.pending, []
        now = time.monotonic()
        if not deliveries and not idle and now - self.stats_sent < STATS_INTERVAL_SECONDS:
            return  # statistics ride along with deliveries, go alone a few times a second, and before idling
        self.stats_sent = now
        stats = [drained for engine in self.engines if (drained := engine.drain_stats()) is not None]
        if deliveries or stats:
            self.connection.send(Updates(deliveries, stats))


class JobTable:
    """The worker's view of live jobs: id → job, forgotten once finished, failed or cancelled."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.jobs: dict[int, GenerationJob] = {}
        self.lock = threading.Lock()

    def make(self, message: Submit) -> GenerationJob:
        remaining = len(message.specs)

        def deliver(item: list[CompletionUpdate] | BaseException) -> None:
            nonlocal remaining
            if isinstance(item, BaseException):
                self.outbox.add(message.job_id, ErrorReport.of(item))
                self.forget(message.job_id)
                return
            self.outbox.add(message.job_id, item)
            remaining -= sum(1 for update in item if update.finish is not None)
            if remaining == 0:
                self.forget(message.job_id)

        job = GenerationJob(
            prompt_ids=message.prompt_ids,
            specs=message.specs,
            max_tokens=message.max_tokens,
            stop=message.stop,
            logprobs=message.logprobs,
            top_logprobs=message.top_logprobs,
            deliver=deliver,
            incremental=message.incremental,
            flush_interval=message.flush_interval,
        )
        with self.lock:
            self.jobs[message.job_id] = job
        return job

    def forget(self, job_id: int) -> GenerationJob | None:
        with self.lock:
            return self.jobs.pop(job_id, None)


def _read_requests(requests: Connection, engines: dict[str, DecodeEngine], table: JobTable, loop: DecodeLoop) -> None:
    """Reader thread: turn the parent's messages into engine calls (no torch work here)."""
    try:
        while True:
            message = requests.recv()
            if isinstance(message, Submit):
                job = table.make(message)
                try:
                    engines[message.model].submit(job)
                except GenserveError as error:
                    job.deliver(error)
            elif isinstance(message, Cancel):
                cancelled = table.forget(message.job_id)
                if cancelled is not None:
                    cancelled.cancel()
            elif isinstance(message, Stop):
                break
    except (EOFError, OSError):
        log.warning("text decode worker: the gRPC process went away; stopping")
    loop.stop()


def worker_main(requests: Connection, updates: Connection, config: WorkerConfig) -> None:
    """Entry point of the worker process (multiprocessing, spawn)."""
    die_with_parent()
    configure_logging(config.log_level)
    configure_torch(config.torch_threads)
    loop = DecodeLoop()
    try:
        engines, ready = load_engines(config, loop.wake)
    except Exception as error:  # reported to the parent, which fails its start-up with it
        updates.send(Failed(str(error) if isinstance(error, GenserveError) else repr(error)))
        return
    updates.send(ready)
    outbox = Outbox(updates, list(engines.values()))
    table = JobTable(outbox)
    threading.Thread(target=_read_requests, args=(requests, engines, table, loop), daemon=True).start()
    loop.run(list(engines.values()), after_tick=outbox.flush)
    updates.close()
