"""The style-transfer job system, measured end to end through the gateway on a private Redis.

Starts its own redis-server, gateway and worker processes (free loopback ports), then:

(A) submit throughput: tiny jobs (32x32, 1 step) through SubmitStyleTransfer with no worker
    running, from a grpc.aio client keeping `--concurrency` submits in flight: jobs/s accepted
    (target >= 500/s) and the per-call latency.
(B) queue latency: one idle worker; one tiny job at a time, each watched with WatchJob opened
    right after its submit returns: submit → RUNNING state event and submit → first PROGRESS
    event, as they reach the client (p50/p95; target p95 <= 100 ms), beside the same spans on
    Redis's clock (the events' own times).
(C) resume overhead: two workers; a 300-step job at 64x48 is let run past step 25 and a random
    0-1 s more (seeded, so the kill lands anywhere in the heartbeat and poll cycles), then the
    worker running it (the job record names its consumer, "<host>-<pid>-<hex>") is killed with
    SIGKILL, and the time from the kill to the first PROGRESS event of attempt 2 is taken
    (target: the claim idle timeout + 2 s). The job is cancelled and the dead worker replaced
    before the next repetition.

The last line printed is one JSON object with every figure and the settings used. Run:
`.venv/bin/python bench/jobs.py [--quick]` (after `make models`). `--quick` is a smoke run of the
same code: 100 submits, 5 latency jobs and one kill, with fewer warm-up calls; same JSON keys.
"""

from __future__ import annotations

# genserve before grpc: importing it sets GRPC_ENABLE_FORK_SUPPORT=0, which gRPC reads when it
# loads. This benchmark starts worker processes (fork + exec) while its own channels are busy, and
# gRPC's fork handlers, run in such a child, now and then abort it before it execs (SIGABRT,
# "epoll_wait error: Bad file descriptor"). The split keeps the import sorter from moving it.
import genserve  # noqa: F401

# isort: split
import argparse
import asyncio
import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

import grpc
from benchlib import (
    API_KEYS,
    KIND,
    MODEL_STORE,
    RPC_TIMEOUT,
    STATE,
    is_terminal,
    median,
    percentile,
    pid_of_consumer,
    rounded,
    sample_png,
    style_job,
)

from genserve.jobs.records import ACTIVE, job_key, text_of
from genserve.testing import JobStack, ServerProcess
from genserve.v1 import jobs_pb2, jobs_pb2_grpc

LONG_STEPS = 300
KILL_AT_STEP = 25


def attempts_started(worker: ServerProcess) -> float:
    """Attempts a worker has started (first runs and resumptions), from its /metrics."""
    found = re.findall(r"^genserve_job_attempts_total\{[^}]*\} (\S+)$", worker.metrics(), re.M)
    return sum(float(value) for value in found)


class EventLog:
    """A WatchJob stream read on its own thread: every event with the time it reached this process."""

    def __init__(self, stub: jobs_pb2_grpc.JobServiceStub, job_id: str, metadata: list[tuple[str, str]]) -> None:
        self.events: list[tuple[float, jobs_pb2.JobEvent]] = []
        self.error: grpc.RpcError | None = None
        self._changed = threading.Condition()
        self._call = stub.WatchJob(jobs_pb2.WatchJobRequest(id=job_id), timeout=600, metadata=metadata)
        self._thread = threading.Thread(target=self._read, name=f"watch-{job_id}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._call:
                arrived = time.perf_counter()
                with self._changed:
                    self.events.append((arrived, event))
                    self._changed.notify_all()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = error
        with self._changed:
            self._changed.notify_all()

    def wait_for(
        self, match: Callable[[jobs_pb2.JobEvent], bool], timeout: float, what: str
    ) -> tuple[float, jobs_pb2.JobEvent]:
        """The first event that matches (arrival time, event); RuntimeError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for arrived, event in self.events:
                    if match(event):
                        return arrived, event
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None or not self._thread.is_alive():
                    raise RuntimeError(f"no {what} event within {timeout:.0f}s (watch error: {self.error})")
                self._changed.wait(min(left, 0.5))

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)


# --- (A) submit throughput --------------------------------------------------------------------


async def submit_throughput(
    address: str,
    metadata: list[tuple[str, str]],
    request: jobs_pb2.SubmitStyleTransferRequest,
    total: int,
    concurrency: int,
    warmup: int,
) -> dict[str, object]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        for _ in range(warmup):
            await stub.SubmitStyleTransfer(request, timeout=RPC_TIMEOUT, metadata=metadata)
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        remaining = iter(range(total))

        async def client() -> None:
            for _ in remaining:  # shared: each submit is taken by whichever client is free
                started = time.perf_counter()
                try:
                    await stub.SubmitStyleTransfer(request, timeout=RPC_TIMEOUT, metadata=metadata)
                except grpc.aio.AioRpcError as error:
                    errors[error.code().name] += 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "submits": total,
        "accepted": len(latencies),
        "errors": dict(errors),
        "concurrency": concurrency,
        "seconds": elapsed,
        "jobs_per_s": len(latencies) / elapsed,
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p95_ms": percentile(latencies, 95) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
    }


# --- (B) queue latency ------------------------------------------------------------------------


def one_job_latency(
    stub: jobs_pb2_grpc.JobServiceStub, request: jobs_pb2.SubmitStyleTransferRequest, metadata: list[tuple[str, str]]
) -> dict[str, float]:
    """Submit one job, watch it to its end; the spans in seconds (client clock and Redis clock)."""
    started = time.perf_counter()
    job = stub.SubmitStyleTransfer(request, timeout=RPC_TIMEOUT, metadata=metadata)
    accepted = time.perf_counter()
    created_ms = job.created_at.ToMilliseconds()
    spans: dict[str, float] = {"submit_rpc": accepted - started}
    call = stub.WatchJob(jobs_pb2.WatchJobRequest(id=job.id), timeout=RPC_TIMEOUT, metadata=metadata)
    for event in call:
        now = time.perf_counter()
        server = (event.time.ToMilliseconds() - created_ms) / 1000
        if event.kind == KIND.JOB_EVENT_KIND_STATE and event.state == STATE.JOB_STATE_RUNNING:
            spans.setdefault("running", now - started)
            spans.setdefault("running_redis", server)
        elif event.kind == KIND.JOB_EVENT_KIND_PROGRESS:
            spans.setdefault("progress", now - started)
            spans.setdefault("progress_redis", server)
        elif is_terminal(event):
            if event.state != STATE.JOB_STATE_SUCCEEDED:
                raise RuntimeError(f"job {job.id} ended {STATE.Name(event.state)}: {event.error}")
            spans["done"] = now - started
    missing = {"running", "progress", "done"} - spans.keys()
    if missing:
        raise RuntimeError(f"job {job.id}: the watch ended without {sorted(missing)}")
    return spans


def queue_latency(
    stub: jobs_pb2_grpc.JobServiceStub,
    request: jobs_pb2.SubmitStyleTransferRequest,
    metadata: list[tuple[str, str]],
    count: int,
    warmup: int,
) -> dict[str, object]:
    for _ in range(warmup):
        one_job_latency(stub, request, metadata)
    samples: dict[str, list[float]] = {}
    for i in range(count):
        for name, value in one_job_latency(stub, request, metadata).items():
            samples.setdefault(name, []).append(value)
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{count} jobs", flush=True)
    figures: dict[str, object] = {"jobs": count}
    for name in ("submit_rpc", "running", "progress", "running_redis", "progress_redis", "done"):
        figures[f"{name}_p50_ms"] = percentile(samples[name], 50) * 1000
        figures[f"{name}_p95_ms"] = percentile(samples[name], 95) * 1000
    return figures


# --- (C) resume overhead ----------------------------------------------------------------------


def warm_workers(
    stack: JobStack,
    stub: jobs_pb2_grpc.JobServiceStub,
    request: jobs_pb2.SubmitStyleTransferRequest,
    tries: int = 8,
) -> None:
    """Run small jobs until every worker has run one, so no torch start-up cost lands in a timing."""
    for _ in range(tries):
        cold = [w for w in stack.workers if attempts_started(w) == 0]
        if not cold:
            return
        ids = [
            stub.SubmitStyleTransfer(request, timeout=RPC_TIMEOUT, metadata=stack.metadata).id
            for _ in range(len(stack.workers))
        ]
        for job_id in ids:
            list(stub.WatchJob(jobs_pb2.WatchJobRequest(id=job_id), timeout=60, metadata=stack.metadata))
    raise RuntimeError(f"some workers ran no job after {tries} rounds of warm-up jobs")


def resume_once(
    stack: JobStack,
    stub: jobs_pb2_grpc.JobServiceStub,
    request: jobs_pb2.SubmitStyleTransferRequest,
    idle_seconds: float,
    delay: float,
) -> dict[str, float]:
    """One kill: `delay` seconds after the job reports step KILL_AT_STEP, so the kill lands at a random
    point of the heartbeat and poll cycles."""
    client = stack.redis_client()
    job_id = stub.SubmitStyleTransfer(request, timeout=RPC_TIMEOUT, metadata=stack.metadata).id
    log = EventLog(stub, job_id, stack.metadata)
    try:
        log.wait_for(
            lambda e: e.kind == KIND.JOB_EVENT_KIND_PROGRESS and e.step >= KILL_AT_STEP, 60, f"step {KILL_AT_STEP}"
        )
        time.sleep(delay)
        consumer = text_of(client.hget(job_key(job_id), "worker"))  # type: ignore[arg-type]
        pid = pid_of_consumer(consumer)
        [victim] = [w for w in stack.workers if w.process.pid == pid]
        os.kill(pid, signal.SIGKILL)
        killed = time.perf_counter()
        victim.process.wait()
        stack.forget(victim)
        reached = int(text_of(client.hget(job_key(job_id), "step")))  # type: ignore[arg-type]
        limit = idle_seconds + 30
        resumed_at, resumed = log.wait_for(lambda e: e.kind == KIND.JOB_EVENT_KIND_RESUMED, limit, "RESUMED")
        progress_at, _ = log.wait_for(
            lambda e: e.kind == KIND.JOB_EVENT_KIND_PROGRESS and e.attempt == 2, limit, "attempt-2 PROGRESS"
        )
        stub.CancelJob(jobs_pb2.CancelJobRequest(id=job_id), timeout=RPC_TIMEOUT, metadata=stack.metadata)
        log.wait_for(is_terminal, 60, "terminal")
    finally:
        log.close()
        client.close()
    return {
        "kill_to_progress_s": progress_at - killed,
        "kill_to_resumed_s": resumed_at - killed,
        "resumed_to_progress_s": progress_at - resumed_at,
        "step_at_kill": reached,
        "resumed_at_step": resumed.step,
    }


def resume_overhead(
    stack: JobStack,
    stub: jobs_pb2_grpc.JobServiceStub,
    long_request: jobs_pb2.SubmitStyleTransferRequest,
    warm_request: jobs_pb2.SubmitStyleTransferRequest,
    repeats: int,
    idle_seconds: float,
    rng: random.Random,
) -> dict[str, object]:
    runs: list[dict[str, float]] = []
    for i in range(repeats):
        while len(stack.workers) < 2:
            stack.start_worker()
        warm_workers(stack, stub, warm_request)
        run = resume_once(stack, stub, long_request, idle_seconds, rng.uniform(0, 1))
        runs.append(run)
        print(
            f"  run {i + 1}: killed at step {run['step_at_kill']:.0f}, resumed from step "
            f"{run['resumed_at_step']:.0f}; kill → RESUMED {run['kill_to_resumed_s']:.2f} s, "
            f"kill → first PROGRESS of attempt 2 {run['kill_to_progress_s']:.2f} s",
            flush=True,
        )
    times = [run["kill_to_progress_s"] for run in runs]
    target = idle_seconds + 2.0
    return {
        "kill_to_progress_s": [round(t, 4) for t in times],
        "kill_to_progress_median_s": median(times),
        "kill_to_resumed_s": [round(run["kill_to_resumed_s"], 4) for run in runs],
        "resumed_to_progress_s": [round(run["resumed_to_progress_s"], 4) for run in runs],
        "steps_redone": [int(run["step_at_kill"] - run["resumed_at_step"]) for run in runs],
        "target_s": target,
        "median_within_target": median(times) <= target,
        "runs_within_target": sum(t <= target for t in times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer submits, jobs and repetitions (a smoke run)")
    parser.add_argument("--submits", type=int, help="submits for the throughput figure (default 2000; quick 100)")
    parser.add_argument("--concurrency", type=int, default=32, help="submits in flight at once")
    parser.add_argument("--latency-jobs", type=int, help="jobs run one by one for the latency (default 100; quick 5)")
    parser.add_argument("--resumes", type=int, help="kill-and-resume repetitions (default 3; quick 1)")
    parser.add_argument("--claim-idle", type=float, default=3.0, help="GENSERVE_JOB_CLAIM_IDLE_SECONDS")
    parser.add_argument("--heartbeat", type=float, default=0.5, help="GENSERVE_JOB_HEARTBEAT_SECONDS")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="GENSERVE_JOB_CHECKPOINT_EVERY")
    parser.add_argument("--torch-threads", type=int, default=1, help="GENSERVE_TORCH_THREADS of each worker")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill delays of (C)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs and Redis data")
    args = parser.parse_args()
    submits = args.submits or (100 if args.quick else 2000)
    latency_jobs = args.latency_jobs or (5 if args.quick else 100)
    resumes = args.resumes or (1 if args.quick else 3)
    submit_warmup, latency_warmup = (5, 1) if args.quick else (50, 3)
    settings: dict[str, object] = {
        "submits": submits,
        "concurrency": args.concurrency,
        "latency_jobs": latency_jobs,
        "resumes": resumes,
        "claim_idle_seconds": args.claim_idle,
        "heartbeat_seconds": args.heartbeat,
        "checkpoint_every": args.checkpoint_every,
        "torch_threads": args.torch_threads,
        "tiny_job": "32x32, 1 step",
        "long_job": f"64x48, {LONG_STEPS} steps, killed 0-1 s (seeded) after step {KILL_AT_STEP}",
        "seed": args.seed,
        "cpus": os.cpu_count(),
    }
    limit = str(submits + 1000)
    gateway_env = {"GENSERVE_JOB_MAX_ACTIVE": limit, "GENSERVE_JOB_MAX_ACTIVE_PER_KEY": limit}
    worker_env = {
        **gateway_env,
        "GENSERVE_JOB_CHECKPOINT_EVERY": str(args.checkpoint_every),
        "GENSERVE_JOB_CLAIM_IDLE_SECONDS": str(args.claim_idle),
        "GENSERVE_JOB_HEARTBEAT_SECONDS": str(args.heartbeat),
        "GENSERVE_TORCH_THREADS": str(args.torch_threads),
        "GENSERVE_SHUTDOWN_NOTICE_SECONDS": "0",
    }
    tiny_photo = sample_png("chelsea", (32, 32))
    tiny = style_job(tiny_photo, sample_png("hubble", (32, 32)), 1, 32)
    warm = style_job(tiny_photo, sample_png("hubble", (32, 32)), 5, 32)
    long = style_job(sample_png("chelsea", (64, 48)), sample_png("hubble", (48, 48)), LONG_STEPS, 64)
    figures: dict[str, object] = {"settings": settings}

    with JobStack(MODEL_STORE, API_KEYS, gateway_env, worker_env, keep=args.keep_logs) as stack:
        assert stack.gateway is not None
        address = stack.gateway.address
        print(f"gateway {address}, redis {stack.redis.url if stack.redis else ''}; {os.cpu_count()} CPUs", flush=True)

        print(f"(A) submit throughput: {submits} tiny jobs, {args.concurrency} in flight, no worker", flush=True)
        submit = asyncio.run(submit_throughput(address, stack.metadata, tiny, submits, args.concurrency, submit_warmup))
        client = stack.redis_client()
        queued = int(client.scard(ACTIVE))  # type: ignore[arg-type]
        submit["queued_in_redis"] = queued
        figures["submit"] = submit
        print(
            f"  {submit['jobs_per_s']:.0f} jobs/s ({submit['accepted']}/{submits} accepted in "
            f"{submit['seconds']:.2f} s; {queued} queued in Redis); per call p50 "
            f"{submit['latency_p50_ms']:.1f} ms, p95 {submit['latency_p95_ms']:.1f} ms; errors {submit['errors']}",
            flush=True,
        )
        client.flushall()  # drop the queued backlog before any worker starts
        client.close()

        print(f"(B) queue latency: {latency_jobs} tiny jobs one at a time, one idle worker", flush=True)
        stack.start_worker()
        with grpc.insecure_channel(address) as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            latency = queue_latency(stub, tiny, stack.metadata, latency_jobs, warmup=latency_warmup)
            figures["queue_latency"] = latency
            print(
                f"  submit → RUNNING p50 {latency['running_p50_ms']:.1f} ms, p95 {latency['running_p95_ms']:.1f} ms; "
                f"submit → first PROGRESS p50 {latency['progress_p50_ms']:.1f} ms, "
                f"p95 {latency['progress_p95_ms']:.1f} ms (Redis clock: RUNNING p95 "
                f"{latency['running_redis_p95_ms']:.1f} ms, PROGRESS p95 {latency['progress_redis_p95_ms']:.1f} ms)",
                flush=True,
            )

            print(
                f"(C) resume overhead: two workers, claim idle {args.claim_idle:g} s, heartbeat "
                f"{args.heartbeat:g} s, checkpoint every {args.checkpoint_every}; {resumes} kill(s)",
                flush=True,
            )
            resume = resume_overhead(stack, stub, long, warm, resumes, args.claim_idle, random.Random(args.seed))
            figures["resume"] = resume
            print(
                f"  kill → first PROGRESS of attempt 2: median {resume['kill_to_progress_median_s']:.2f} s "
                f"(target <= {resume['target_s']:.1f} s; {resume['runs_within_target']}/{resumes} runs within)",
                flush=True,
            )

    figures["targets_met"] = {
        "submit_ge_500_per_s": submit["jobs_per_s"] >= 500,  # type: ignore[operator]
        "progress_p95_le_100ms": latency["progress_p95_ms"] <= 100,  # type: ignore[operator]
        "resume_median_le_idle_plus_2s": resume["median_within_target"],
        "resume_every_run_le_idle_plus_2s": resume["runs_within_target"] == resumes,
    }
    print(json.dumps(rounded(figures)))


if __name__ == "__main__":
    main()
