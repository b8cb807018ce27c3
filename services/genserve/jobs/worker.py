"""A job worker: takes style-transfer jobs off the Redis stream and runs them to completion, exactly once.

The loop, on its own thread (torch runs here and nowhere else in the process):
1. Claim an entry whose worker has been silent for GENSERVE_JOB_CLAIM_IDLE_SECONDS (XAUTOCLAIM),
   else read a new one (XREADGROUP).
2. START it: the job's next attempt (fenced; see scripts.py). A job found RUNNING lost its last
   worker: after GENSERVE_JOB_MAX_ATTEMPTS such losses it is FAILED instead (dead letter).
3. Rebuild the engine from the job's inputs and, when there is one, its latest checkpoint.
4. Run it. After every step, PROGRESS (a preview every preview_every steps); every
   GENSERVE_JOB_CHECKPOINT_EVERY steps, CHECKPOINT the engine state. A heartbeat thread renews the
   claim meanwhile, so a job that runs longer than the idle timeout is never taken from a live worker.
5. FINISH: result, terminal state, terminal event and the queue entry's ack in one script.
Any fenced call that is refused (the job was cancelled, expired, or another attempt took over)
stops the run at that step; nothing this worker does afterwards reaches the job. On SIGTERM
the worker checkpoints, hands its job back (RELEASE), and exits.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import safetensors.torch
import torch

from genserve.common.config import ImageSettings, JobSettings
from genserve.common.images import ImageLimits, decode_image, encode_png, to_tensor
from genserve.common.metrics import Metrics
from genserve.common.redis_clients import text_of
from genserve.common.style_request import params_from_json
from genserve.jobs import scripts
from genserve.jobs.records import PREFIX, QUEUE, JobRecord, job_key, losses_json
from genserve.vision.backbones import VGG16Features
from genserve.vision.style import StateMismatch, StyleTransfer
from genserve.vision.style_progress import StyleProgress

log = logging.getLogger(__name__)

IDLE_READ_BLOCK_MS = 1000  # how long one XREADGROUP waits; the loop re-checks for claims between


class JobLost(Exception):
    """The job is no longer this attempt's: cancelled, expired, superseded, or Redis stayed unreachable."""


class Handback(Exception):
    """The worker is stopping: checkpoint and hand the job back."""


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


def state_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    return safetensors.torch.save(tensors, metadata)


def state_from_bytes(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors bytes → (tensors, metadata); the metadata lives in the JSON header."""
    (header_length,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + header_length]).get("__metadata__", {})
    return safetensors.torch.load(data), metadata


@dataclass
class Claim:
    """The job this worker is running, and what its heartbeat needs."""

    job_id: str
    entry: str
    attempt: int
    lost: threading.Event
    lost_because: str = ""  # what the refusing script answered: CANCELLED, superseded, gone, ...

    def lose(self, answer: str) -> None:
        """The first refusal names the loss (a later one, e.g. 'gone' once the record expired, does not)."""
        if not self.lost.is_set():
            self.lost_because = answer
        self.lost.set()


class JobWorker:
    def __init__(
        self,
        client: redis.Redis,
        vgg: VGG16Features,
        settings: JobSettings,
        images: ImageSettings,
        metrics: Metrics,
        stop: threading.Event,
        consumer: str | None = None,
    ) -> None:
        self.client = client
        self.vgg = vgg
        self.settings = settings
        self.limits = ImageLimits(images.max_image_pixels, images.max_image_bytes)
        self.metrics = metrics
        self.stop = stop
        self.consumer = consumer or consumer_name()
        self.ttl_ms = int(settings.ttl_seconds * 1000)
        self._start = client.register_script(scripts.START)
        self._progress = client.register_script(scripts.PROGRESS)
        self._checkpoint = client.register_script(scripts.CHECKPOINT)
        self._heartbeat = client.register_script(scripts.HEARTBEAT)
        self._finish = client.register_script(scripts.FINISH)
        self._release = client.register_script(scripts.RELEASE)
        self._ensure_group_script = client.register_script(scripts.ENSURE_GROUP)
        self.claim: Claim | None = None
        self._claim_lock = threading.Lock()

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Take and run jobs until `stop` is set; Redis outages are waited out."""
        heartbeat = threading.Thread(target=self._heartbeats, name="job-heartbeat", daemon=True)
        heartbeat.start()
        pause = 0.1
        group_ready = False
        while not self.stop.is_set():
            try:
                if not group_ready:
                    self._ensure_group()
                    group_ready = True
                taken = self._take()
                pause = 0.1
                if taken is not None:
                    self._handle(*taken)
            except redis.ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                group_ready = False  # the group went with its data (FLUSHALL, a fresh Redis): make it again
            except (redis.ConnectionError, redis.TimeoutError) as error:
                log.warning("worker %s: Redis unreachable (%s); retrying in %.1fs", self.consumer, error, pause)
                self.stop.wait(pause)
                pause = min(pause * 2, 2.0)

    def _ensure_group(self) -> None:
        self._ensure_group_script(args=[PREFIX])

    def _take(self) -> tuple[str, str, bool] | None:
        """(queue entry id, job id, claimed from a silent worker) or None."""
        idle_ms = int(self.settings.claim_idle_seconds * 1000)
        claimed: Any = self.client.xautoclaim(QUEUE, scripts.GROUP, self.consumer, idle_ms, "0-0", count=1)
        for deleted in claimed[2] if len(claimed) > 2 else []:
            log.info("worker %s: dropped entry %s, deleted from the queue", self.consumer, text_of(deleted))
        for entry_id, fields in claimed[1]:
            if fields:
                self.metrics.jobs_claimed.inc()
                return text_of(entry_id), text_of(fields[b"job"]), True
            self.client.xack(QUEUE, scripts.GROUP, entry_id)
        found: Any = self.client.xreadgroup(
            scripts.GROUP, self.consumer, {QUEUE: ">"}, count=1, block=IDLE_READ_BLOCK_MS
        )
        for _, entries in found or []:
            for entry_id, fields in entries:
                return text_of(entry_id), text_of(fields[b"job"]), False
        return None

    # --- one job ----------------------------------------------------------------------------

    def _handle(self, entry: str, job_id: str, claimed: bool) -> None:
        outcome = self._start(args=[PREFIX, job_id, entry, self.consumer, self.settings.max_attempts, self.ttl_ms])
        status = text_of(outcome[0])
        if status == "dead":
            self.metrics.jobs_finished.labels("FAILED").inc()
            log.error("job %s: dead-lettered after its worker was lost %s times", job_id, text_of(outcome[1]))
            return
        if status != "run":
            log.info("job %s: not run (%s)", job_id, " ".join(text_of(part) for part in outcome))
            return
        attempt, checkpoint_step = int(outcome[1]), int(outcome[2])
        self.metrics.job_attempts.labels("resumed" if attempt > 1 else "first").inc()
        record = JobRecord.from_hash(self.client.hgetall(job_key(job_id)))  # type: ignore[arg-type]
        if attempt == 1 and record.started_ms:
            self.metrics.job_queue_wait_seconds.observe(max(0.0, (record.started_ms - record.created_ms) / 1000))
        claim = Claim(job_id, entry, attempt, threading.Event())
        with self._claim_lock:
            self.claim = claim
        try:
            self._run(record, claim, checkpoint_step)
        except JobLost as lost:
            log.info("job %s attempt %d: stopped, %s", job_id, attempt, lost)
            # Counted here, whichever noticed the cancel first: a step's script or the heartbeat.
            if claim.lost_because == "CANCELLED":
                self.metrics.jobs_finished.labels("CANCELLED").inc()
        except Handback:
            log.info("job %s attempt %d: handed back at shutdown", job_id, attempt)
        finally:
            with self._claim_lock:
                self.claim = None

    def _run(self, record: JobRecord, claim: Claim, checkpoint_step: int) -> None:
        try:
            engine = self._engine(record, claim, checkpoint_step)
        except Exception as error:  # inputs that cannot run (checked at submit, so only a bug gets here)
            log.exception("job %s: cannot start", record.id)
            self._call(self._finish, claim, ["FAILED", f"the job could not start: {error}", b"", self.ttl_ms])
            self.metrics.jobs_finished.labels("FAILED").inc()
            return
        last_step = time.perf_counter()

        def on_step(progress: StyleProgress) -> None:
            nonlocal last_step
            now = time.perf_counter()
            self.metrics.job_step_seconds.observe(now - last_step)
            last_step = now
            if claim.lost.is_set():
                raise JobLost(f"its claim was lost ({claim.lost_because})")
            preview = b""
            if record.preview_every and progress.step % record.preview_every == 0:
                preview = encode_png(engine.current_image())
            losses = losses_json(progress.content, progress.style, progress.tv, progress.total)
            self._call(self._progress, claim, [progress.step, progress.total_steps, losses, preview])
            if self.stop.is_set() and progress.step < progress.total_steps:
                raise Handback  # after reporting the step, so the hand-back's checkpoint is the step reported
            if progress.step % self.settings.checkpoint_every == 0 and progress.step < progress.total_steps:
                self._save(engine, claim)

        try:
            result = engine.run(on_step)
        except Handback:
            self._save(engine, claim)
            self._call(self._release, claim, [self.consumer, claim.entry])
            raise
        self._call(self._finish, claim, ["SUCCEEDED", "", encode_png(result), self.ttl_ms])
        self.metrics.jobs_finished.labels("SUCCEEDED").inc()
        finished = JobRecord.from_hash(self.client.hgetall(job_key(record.id)))  # type: ignore[arg-type]
        if finished.started_ms and finished.finished_ms:
            self.metrics.job_run_seconds.observe((finished.finished_ms - finished.started_ms) / 1000)

    def _engine(self, record: JobRecord, claim: Claim, checkpoint_step: int) -> StyleTransfer:
        inputs: Any = self.client.hgetall(job_key(record.id) + ":input")
        if not inputs:  # ended between START and now: the record says how
            claim.lose(text_of(self.client.hget(job_key(record.id), "state") or b"gone"))
            raise JobLost(f"its inputs are gone (the job is {claim.lost_because})")
        weights = json.loads(inputs[b"weights"])
        content = to_tensor(decode_image(inputs[b"content"], "content", self.limits))
        styles = [
            (to_tensor(decode_image(inputs[f"style{i}".encode()], f"styles[{i}].image", self.limits)), float(w))
            for i, w in enumerate(weights)
        ]
        engine = StyleTransfer(self.vgg, content, styles, params_from_json(record.params))
        if checkpoint_step > 0:
            data: Any = self.client.get(job_key(record.id) + ":checkpoint")
            try:
                if data is None:
                    raise StateMismatch("the checkpoint is missing")
                engine.load_state(*state_from_bytes(data))
                log.info("job %s attempt %d: resumed at step %d", record.id, claim.attempt, engine.step)
            except (StateMismatch, ValueError) as error:
                log.warning("job %s: checkpoint unusable (%s); starting over", record.id, error)
                engine = StyleTransfer(self.vgg, content, styles, params_from_json(record.params))
        return engine

    def _save(self, engine: StyleTransfer, claim: Claim) -> None:
        tensors, metadata = engine.state()
        self._call(self._checkpoint, claim, [engine.step, state_bytes(tensors, metadata)])

    def _call(self, script: Callable[..., Any], claim: Claim, args: list[Any]) -> None:
        """Run a fenced script for `claim`, riding out a Redis outage; JobLost if it is refused."""
        deadline = time.monotonic() + self.settings.redis_retry_seconds
        pause = 0.05
        while True:
            try:
                answer = text_of(script(args=[PREFIX, claim.job_id, claim.attempt, *args]))
                break
            except (redis.ConnectionError, redis.TimeoutError) as error:
                if time.monotonic() > deadline:
                    raise JobLost(f"Redis stayed unreachable for {self.settings.redis_retry_seconds:.0f}s") from error
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
        if answer != "ok":
            claim.lose(answer)
            raise JobLost(f"the job is {answer}")

    # --- heartbeats -------------------------------------------------------------------------

    def _heartbeats(self) -> None:
        """Renew the running job's claim, so no other worker takes it while this one is alive."""
        while not self.stop.wait(self.settings.heartbeat_seconds):
            with self._claim_lock:
                claim = self.claim
            if claim is None:
                continue
            try:
                answer = text_of(
                    self._heartbeat(args=[PREFIX, claim.job_id, claim.attempt, self.consumer, claim.entry])
                )
            except (redis.ConnectionError, redis.TimeoutError):
                continue  # the step loop rides the outage out or gives the job up
            if answer != "ok":
                claim.lose(answer)
