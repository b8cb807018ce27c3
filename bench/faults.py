"""Worker crashes under load: random SIGKILLs of job workers while a batch of style-transfer jobs drains.

Starts its own redis-server, gateway and `--workers` worker processes (free loopback ports),
submits `--jobs` small jobs of `--steps` steps, then kills a random live worker with SIGKILL at
random times (seeded) while jobs remain, `--kills` times at most. A supervisor thread starts a
new worker whenever one died, as a container orchestrator would. Once every job is terminal (or
`--timeout` passed) each job's WatchJob event log is read back and checked:

- succeeded exactly once: one terminal event, SUCCEEDED, last in the log, its steps all
  reported, and a result to fetch;
- lost: never terminal, or FAILED without a reason;
- duplicated: more than one terminal event, anything after it, a step reported twice within
  one attempt, or a write of an older attempt after a newer one began;
- step gaps: an attempt whose progress skips a step or does not start right after the step it
  resumed from (counted apart; a job with gaps did not succeed "exactly once");
- steps executed (PROGRESS events over all attempts) against steps needed (jobs × steps): the
  difference is the work redone after resumes, per kill and per resume. A step in flight when
  its worker died never reached the log, so it is not counted.

Targets: 0 lost, 0 duplicated, wasted steps per kill <= the checkpoint interval. Kills that
found the worker idle (between jobs) and mid-job are counted apart. The last line printed is one
JSON object. Run: `.venv/bin/python bench/faults.py [--kills N] [--jobs N] [--steps N] [--seed N] [--quick]`.
`--quick` is a smoke run of the same code: 4 jobs × 20 steps and one kill at most, unless those
flags say otherwise; same JSON keys.
"""

from __future__ import annotations

# genserve before grpc: importing it sets GRPC_ENABLE_FORK_SUPPORT=0, which gRPC reads when it
# loads. This benchmark starts worker processes (fork + exec) while its own channels are busy, and
# gRPC's fork handlers, run in such a child, now and then abort it before it execs (SIGABRT,
# "epoll_wait error: Bad file descriptor"). The split keeps the import sorter from moving it.
import genserve  # noqa: F401

# isort: split
import argparse
import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field

import grpc
from benchlib import (
    API_KEYS,
    KIND,
    MODEL_STORE,
    RPC_TIMEOUT,
    STATE,
    is_terminal,
    median,
    pid_of_consumer,
    rounded,
    sample_png,
    style_job,
)

from genserve.common.processes import StartError
from genserve.jobs.records import ACTIVE, job_key, text_of
from genserve.testing import JobStack, ServerProcess
from genserve.v1 import jobs_pb2, jobs_pb2_grpc


@dataclass
class Kill:
    at_s: float  # since the first submit
    pid: int
    job_id: str  # "" when the worker was idle
    step: int  # the job's last reported step when its worker died


class Supervisor:
    """Keeps `count` workers running: starts a new one whenever one has died."""

    def __init__(self, stack: JobStack, count: int) -> None:
        self.stack = stack
        self.count = count
        self.stop = threading.Event()
        self.start_seconds: list[float] = []
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def live(self) -> list[ServerProcess]:
        return [w for w in list(self.stack.workers) if w.process.poll() is None]

    def _run(self) -> None:
        # Workers started here are bound to die with this thread (PR_SET_PDEATHSIG is per thread),
        # so it runs until the benchmark ends.
        failed_in_a_row = 0
        while not self.stop.is_set():
            for dead in [w for w in list(self.stack.workers) if w.process.poll() is not None]:
                self.stack.forget(dead)
            if len(self.stack.workers) < self.count:
                started = time.perf_counter()
                try:
                    self.stack.start_worker()
                    self.start_seconds.append(time.perf_counter() - started)
                    failed_in_a_row = 0
                except StartError as error:
                    self.failures.append(str(error))
                    failed_in_a_row += 1
                    if failed_in_a_row >= 5:
                        return
                continue
            self.stop.wait(0.05)


@dataclass
class Verdict:
    """What one job's event log shows."""

    job_id: str
    state: str
    error: str
    terminal_events: int
    after_terminal: int
    repeated_steps: int
    stale_writes: int
    gaps: int  # progress that skipped a step, or did not continue from where its attempt started
    progress_events: int
    last_step: int
    resumes: list[tuple[int, int]] = field(default_factory=list)  # (last step of the attempt before, resumed at)
    has_result: bool = False

    @property
    def duplicated(self) -> bool:
        return self.terminal_events > 1 or self.after_terminal > 0 or self.repeated_steps > 0 or self.stale_writes > 0

    @property
    def lost(self) -> bool:
        return self.state not in ("SUCCEEDED", "FAILED", "CANCELLED") or (self.state == "FAILED" and not self.error)

    def succeeded_once(self, steps: int) -> bool:
        return (
            self.state == "SUCCEEDED"
            and self.terminal_events == 1
            and not self.duplicated
            and self.last_step == steps
            and self.gaps == 0
            and self.has_result
        )


def read_log(
    stub: jobs_pb2_grpc.JobServiceStub, job_id: str, metadata: list[tuple[str, str]], timeout: float
) -> list[jobs_pb2.JobEvent]:
    """The job's events from its first, as WatchJob replays them (what arrived before `timeout` when it never ends)."""
    events: list[jobs_pb2.JobEvent] = []
    try:
        for event in stub.WatchJob(jobs_pb2.WatchJobRequest(id=job_id), timeout=timeout, metadata=metadata):
            events.append(event)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # type: ignore[attr-defined]
            raise
    return events


def judge(job: jobs_pb2.Job, log: list[jobs_pb2.JobEvent], has_result: bool) -> Verdict:
    terminal = [i for i, e in enumerate(log) if is_terminal(e)]
    seen: set[tuple[int, int]] = set()
    repeated = stale = gaps = 0
    latest_attempt, last_step_of_attempt, next_step = 0, 0, 1
    resumes: list[tuple[int, int]] = []
    progress = 0
    for event in log:
        if event.attempt < latest_attempt:
            stale += 1  # an older attempt wrote after a newer one began
        if event.kind == KIND.JOB_EVENT_KIND_RESUMED:
            resumes.append((last_step_of_attempt, event.step))
            last_step_of_attempt, next_step = event.step, event.step + 1
        latest_attempt = max(latest_attempt, event.attempt)
        if event.kind == KIND.JOB_EVENT_KIND_PROGRESS:
            progress += 1
            if (event.attempt, event.step) in seen:
                repeated += 1
            elif event.step != next_step:
                gaps += 1
            seen.add((event.attempt, event.step))
            last_step_of_attempt, next_step = event.step, event.step + 1
    return Verdict(
        job_id=job.id,
        state=STATE.Name(job.state).removeprefix("JOB_STATE_"),
        error=job.error,
        terminal_events=len(terminal),
        after_terminal=len(log) - 1 - terminal[0] if terminal else 0,
        repeated_steps=repeated,
        stale_writes=stale,
        gaps=gaps,
        progress_events=progress,
        last_step=max((e.step for e in log if e.kind == KIND.JOB_EVENT_KIND_PROGRESS), default=0),
        resumes=resumes,
        has_result=has_result,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few short jobs, few kills (a smoke run)")
    parser.add_argument(
        "--kills", type=int, help="SIGKILLs at most, none once every job is terminal (default 20; quick 1)"
    )
    parser.add_argument("--jobs", type=int, help="jobs in the batch (default 20; quick 4)")
    parser.add_argument("--steps", type=int, help="steps per job, 64x48 L-BFGS (default 40; quick 20)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes kept running")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times and victims")
    parser.add_argument("--checkpoint-every", type=int, default=5, help="GENSERVE_JOB_CHECKPOINT_EVERY")
    parser.add_argument("--claim-idle", type=float, default=2.0, help="GENSERVE_JOB_CLAIM_IDLE_SECONDS")
    parser.add_argument("--heartbeat", type=float, default=0.5, help="GENSERVE_JOB_HEARTBEAT_SECONDS")
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=10,
        help="GENSERVE_JOB_MAX_ATTEMPTS: worker losses before a job is dead-lettered (random kills may hit "
        "one job often; the default 3 would dead-letter it)",
    )
    parser.add_argument(
        "--gap", type=float, nargs=2, default=(0.2, 1.5), metavar=("MIN", "MAX"), help="seconds between kill times"
    )
    parser.add_argument("--torch-threads", type=int, default=1, help="GENSERVE_TORCH_THREADS of each worker")
    parser.add_argument("--timeout", type=float, help="seconds for the whole batch to drain (default 300; quick 90)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs and Redis data")
    args = parser.parse_args()
    args.kills = args.kills if args.kills is not None else (1 if args.quick else 20)
    args.jobs = args.jobs or (4 if args.quick else 20)
    args.steps = args.steps or (20 if args.quick else 40)
    args.timeout = args.timeout or (90.0 if args.quick else 300.0)
    rng = random.Random(args.seed)
    settings = {
        "jobs": args.jobs,
        "steps": args.steps,
        "image": "64x48",
        "workers": args.workers,
        "kills_requested": args.kills,
        "seed": args.seed,
        "checkpoint_every": args.checkpoint_every,
        "claim_idle_seconds": args.claim_idle,
        "heartbeat_seconds": args.heartbeat,
        "max_attempts": args.max_attempts,
        "gap_seconds": list(args.gap),
        "torch_threads": args.torch_threads,
        "cpus": os.cpu_count(),
    }
    worker_env = {
        "GENSERVE_JOB_CHECKPOINT_EVERY": str(args.checkpoint_every),
        "GENSERVE_JOB_CLAIM_IDLE_SECONDS": str(args.claim_idle),
        "GENSERVE_JOB_HEARTBEAT_SECONDS": str(args.heartbeat),
        "GENSERVE_JOB_MAX_ATTEMPTS": str(args.max_attempts),
        "GENSERVE_TORCH_THREADS": str(args.torch_threads),
        "GENSERVE_LOG_LEVEL": "WARNING",
    }
    request = style_job(sample_png("chelsea", (64, 48)), sample_png("hubble", (48, 48)), args.steps, 64)
    kills: list[Kill] = []
    skipped = 0
    verdicts: list[Verdict] = []
    failed = False
    stack = JobStack(MODEL_STORE, API_KEYS, worker_env=worker_env, keep=args.keep_logs)
    supervisor = Supervisor(stack, args.workers)
    try:
        stack.start()
        assert stack.gateway is not None
        for _ in range(args.workers):
            stack.start_worker()
        supervisor.thread.start()
        client = stack.redis_client()
        print(
            f"{args.workers} workers, {args.jobs} jobs × {args.steps} steps at 64x48, up to {args.kills} kills "
            f"(seed {args.seed}); checkpoint every {args.checkpoint_every}, claim idle {args.claim_idle:g} s; "
            f"{os.cpu_count()} CPUs",
            flush=True,
        )
        with grpc.insecure_channel(stack.gateway.address) as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            started = time.perf_counter()
            deadline = started + args.timeout
            ids = [
                stub.SubmitStyleTransfer(request, timeout=RPC_TIMEOUT, metadata=stack.metadata).id
                for _ in range(args.jobs)
            ]

            def remaining() -> int:
                return int(client.scard(ACTIVE))  # type: ignore[arg-type]

            # Kill at random times while jobs remain.
            while len(kills) < args.kills and remaining() and time.perf_counter() < deadline:
                time.sleep(rng.uniform(*args.gap))
                live = sorted(supervisor.live(), key=lambda w: w.process.pid)
                if not remaining():
                    break
                if not live:
                    skipped += 1  # every worker is still starting: no kill this time
                    continue
                victim = rng.choice(live)
                os.kill(victim.process.pid, signal.SIGKILL)
                at = time.perf_counter() - started
                victim.process.wait()
                stack.forget(victim)
                # The dead worker writes nothing more: a RUNNING job that names it was in its hands.
                kill = Kill(at, victim.process.pid, "", 0)
                for job_id in ids:
                    state, worker, step = client.hmget(job_key(job_id), "state", "worker", "step")  # type: ignore[misc]
                    if text_of(state) == "RUNNING" and text_of(worker) and pid_of_consumer(text_of(worker)) == kill.pid:
                        kill.job_id, kill.step = job_id, int(text_of(step))
                kills.append(kill)
                where = f"mid-job (job …{kill.job_id[-6:]} at step {kill.step})" if kill.job_id else "idle"
                print(f"  {at:6.2f} s  kill {len(kills):2d}: worker pid {kill.pid}, {where}", flush=True)

            while remaining() and time.perf_counter() < deadline:
                time.sleep(0.1)
            drained = remaining() == 0
            elapsed = time.perf_counter() - started
            print(f"batch {'drained' if drained else 'NOT drained'} after {elapsed:.1f} s", flush=True)

            records = [
                stub.GetJob(jobs_pb2.GetJobRequest(id=job_id), timeout=RPC_TIMEOUT, metadata=stack.metadata)
                for job_id in ids
            ]
            for job in records:
                terminal = job.state in (STATE.JOB_STATE_SUCCEEDED, STATE.JOB_STATE_FAILED, STATE.JOB_STATE_CANCELLED)
                log = read_log(stub, job.id, stack.metadata, 30 if terminal else 2)
                has_result = False
                if job.state == STATE.JOB_STATE_SUCCEEDED:
                    result = stub.GetJobResult(
                        jobs_pb2.GetJobResultRequest(id=job.id), timeout=RPC_TIMEOUT, metadata=stack.metadata
                    )
                    has_result = bool(result.image.data)
                verdicts.append(judge(job, log, has_result))
            finished = [job.finished_at.ToMilliseconds() for job in records if job.HasField("finished_at")]
            first = min(job.created_at.ToMilliseconds() for job in records)
            drain_s = (max(finished) - first) / 1000 if drained and finished else None
        client.close()
        # Keep the logs of a run that went wrong.
        failed = bool(supervisor.failures) or not drained or any(v.lost or v.duplicated for v in verdicts)
    except KeyboardInterrupt:
        raise
    except BaseException:
        failed = True
        raise
    finally:
        supervisor.stop.set()
        stack.stop(failed=failed)
        supervisor.thread.join(5)

    k = args.checkpoint_every
    needed = args.jobs * args.steps
    executed = sum(v.progress_events for v in verdicts)
    # Redone after resumes, in jobs that succeeded; the steps of jobs that did not succeed are counted apart.
    wasted = sum(v.progress_events - v.last_step for v in verdicts if v.state == "SUCCEEDED")
    unfinished_steps = sum(v.progress_events for v in verdicts if v.state != "SUCCEEDED")
    redone = [before - at for v in verdicts for before, at in v.resumes]
    mid_job = [kill for kill in kills if kill.job_id]
    succeeded_once = sum(v.succeeded_once(args.steps) for v in verdicts)
    lost = [v.job_id for v in verdicts if v.lost]
    duplicated = [v.job_id for v in verdicts if v.duplicated]
    dead_lettered = [v.job_id for v in verdicts if v.state == "FAILED" and "dead-lettered" in v.error]
    per_kill = wasted / len(mid_job) if mid_job else 0.0
    figures: dict[str, object] = {
        "settings": settings,
        "jobs_submitted": args.jobs,
        "succeeded_exactly_once": succeeded_once,
        "lost": len(lost),
        "duplicated": len(duplicated),
        "dead_lettered": len(dead_lettered),
        "jobs_with_step_gaps": sum(v.gaps > 0 for v in verdicts),
        "states": {s: sum(v.state == s for v in verdicts) for s in sorted({v.state for v in verdicts})},
        "kills": len(kills),
        "kills_mid_job": len(mid_job),
        "kills_idle": len(kills) - len(mid_job),
        "kill_times_with_no_live_worker": skipped,
        "resumes": len(redone),
        "worker_restarts": len(supervisor.start_seconds),
        "worker_start_median_s": median(supervisor.start_seconds) if supervisor.start_seconds else 0.0,
        "steps_needed": needed,
        "steps_executed": executed,
        "steps_wasted": wasted,
        "steps_in_jobs_that_did_not_succeed": unfinished_steps,
        "wasted_per_mid_job_kill": per_kill,
        "wasted_per_kill": wasted / len(kills) if kills else 0.0,
        "max_redone_in_one_resume": max(redone, default=0),
        "drain_s": drain_s,
    }
    figures["targets_met"] = {
        "zero_lost": not lost,
        "zero_duplicated": not duplicated,
        "wasted_per_kill_le_checkpoint_interval": per_kill <= k,
    }
    print(
        f"jobs submitted {args.jobs}: succeeded exactly once {succeeded_once}, lost {len(lost)}, "
        f"duplicated {len(duplicated)}, dead-lettered {len(dead_lettered)}, with step gaps "
        f"{figures['jobs_with_step_gaps']}; states {figures['states']}",
        flush=True,
    )
    print(
        f"kills {len(kills)}: mid-job {len(mid_job)}, idle {len(kills) - len(mid_job)} ({skipped} kill times found "
        f"no live worker and were skipped); resumes {len(redone)}; "
        f"worker restarts {len(supervisor.start_seconds)} (median start {figures['worker_start_median_s']:.1f} s)",
        flush=True,
    )
    print(
        f"steps executed {executed} / needed {needed}: wasted {wasted} ({per_kill:.2f} per mid-job kill, "
        f"{figures['wasted_per_kill']:.2f} per kill; at most {max(redone, default=0)} redone in one resume; "
        f"checkpoint every {k}; {unfinished_steps} more in jobs that did not succeed)",
        flush=True,
    )
    drain = f"{drain_s:.1f} s" if drain_s is not None else f"not drained within {args.timeout:g} s"
    print(f"time to drain: {drain} (first submit to last terminal state, Redis clock)", flush=True)
    print(
        f"targets: 0 lost {'met' if not lost else 'MISSED'}, 0 duplicated {'met' if not duplicated else 'MISSED'}, "
        f"wasted per kill <= {k} {'met' if per_kill <= k else 'MISSED'}",
        flush=True,
    )
    for problem, jobs in (("lost", lost), ("duplicated", duplicated)):
        for job_id in jobs:
            [verdict] = [v for v in verdicts if v.job_id == job_id]
            print(f"  {problem}: {verdict}", flush=True)
    if supervisor.failures:
        print(f"worker restarts that failed: {supervisor.failures}", flush=True)
    print(json.dumps(rounded(figures)))


if __name__ == "__main__":
    main()
