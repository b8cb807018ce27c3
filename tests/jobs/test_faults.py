"""Fault tests: real redis-server, real gateway, real worker processes killed and stalled mid-job.

Each job must end exactly once (one terminal event, one result), resume from its checkpoint after
a worker dies, and never be taken from a worker that is alive.
"""

from __future__ import annotations

import math
import os
import re
import signal
import time

from genserve.jobs import scripts
from genserve.jobs.records import PREFIX, job_key
from genserve.v1 import jobs_pb2, jobs_pb2_grpc
from tests.conftest import wait_for
from tests.jobs.conftest import ALICE, CHECKPOINT_EVERY, CLAIM_IDLE_SECONDS, JobStack, events, style_job, wait_for_step

KIND = jobs_pb2.JobEventKind
STATE = jobs_pb2.JobState
LONG = 150  # steps: a few seconds at 72x48 on one thread, long enough to interrupt


def submit(jobs: jobs_pb2_grpc.JobServiceStub, request: jobs_pb2.SubmitStyleTransferRequest) -> str:
    return str(jobs.SubmitStyleTransfer(request, timeout=30, metadata=[ALICE]).id)


def get(jobs: jobs_pb2_grpc.JobServiceStub, job_id: str) -> jobs_pb2.Job:
    return jobs.GetJob(jobs_pb2.GetJobRequest(id=job_id), timeout=10, metadata=[ALICE])


def assert_ended_once(log: list[jobs_pb2.JobEvent], state: int) -> None:
    terminal = [e for e in log if e.kind == KIND.JOB_EVENT_KIND_STATE and e.state >= STATE.JOB_STATE_SUCCEEDED]
    assert [e.state for e in terminal] == [state]
    assert log[-1] is terminal[0], "nothing may follow the terminal event"


def counter(metrics: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_killed_worker_is_resumed_from_its_checkpoint_and_the_job_succeeds_once(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    first = clean.start_worker()
    straight_id = submit(jobs, style_job(photos, LONG))
    assert events(jobs, straight_id)[-1].state == STATE.JOB_STATE_SUCCEEDED  # the same job, uninterrupted

    job_id = submit(jobs, style_job(photos, LONG))
    reached = wait_for_step(jobs, job_id, 2 * CHECKPOINT_EVERY + 5)
    first.process.kill()  # kill -9, mid-step
    first.process.wait()
    clean.start_worker()
    log = events(jobs, job_id)

    assert_ended_once(log, STATE.JOB_STATE_SUCCEEDED)
    [resumed] = [e for e in log if e.kind == KIND.JOB_EVENT_KIND_RESUMED]
    last_checkpoint = (reached // CHECKPOINT_EVERY) * CHECKPOINT_EVERY
    assert resumed.attempt == 2 and last_checkpoint <= resumed.step <= reached + 1, (resumed.step, reached)
    after = [e.step for e in log[log.index(resumed) + 1 :] if e.kind == KIND.JOB_EVENT_KIND_PROGRESS]
    assert after == list(range(resumed.step + 1, LONG + 1)), "the new attempt continues from the checkpoint"
    job = get(jobs, job_id)
    assert job.attempt == 2 and job.step == LONG
    assert jobs.GetJobResult(jobs_pb2.GetJobResultRequest(id=job_id), timeout=10, metadata=[ALICE]).image.data
    # (i) Same seed: the resumed run lands where the uninterrupted one did.
    straight = get(jobs, straight_id).losses.total
    assert math.isclose(job.losses.total, straight, rel_tol=0.05), (job.losses.total, straight)


def test_a_redis_restart_mid_job_loses_no_acknowledged_job(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    clean.start_worker()
    ids = [submit(jobs, style_job(photos, 60)) for _ in range(3)]
    wait_for_step(jobs, ids[0], 5)
    # A fixed wait on purpose: with appendfsync everysec only what was acknowledged a second ago is
    # promised to be on disk, and no state shows when the fsync has happened.
    time.sleep(1.2)
    port, data_dir = clean.redis.port, clean.redis.data_dir
    clean.redis.kill()
    time.sleep(0.5)  # a fixed wait on purpose: the outage lasts a while, the worker must ride it out
    clean.redis.__init__(data_dir, port)  # type: ignore[misc]
    clean.redis.start()
    for job_id in ids:
        assert events(jobs, job_id)[-1].state == STATE.JOB_STATE_SUCCEEDED
        assert get(jobs, job_id).step == 60


def test_a_stale_worker_cannot_write_over_the_attempt_that_replaced_it(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    stalled = clean.start_worker()
    job_id = submit(jobs, style_job(photos, LONG))
    wait_for_step(jobs, job_id, 5)
    os.kill(stalled.process.pid, signal.SIGSTOP)  # alive but silent, like a long GC pause or a partition
    try:
        clean.start_worker()
        assert wait_for(lambda: get(jobs, job_id).attempt >= 2, timeout=30)
        assert get(jobs, job_id).attempt == 2
    finally:
        os.kill(stalled.process.pid, signal.SIGCONT)  # it wakes up and tries to go on
    log = events(jobs, job_id)
    assert_ended_once(log, STATE.JOB_STATE_SUCCEEDED)
    resumed = next(i for i, e in enumerate(log) if e.kind == KIND.JOB_EVENT_KIND_RESUMED)
    assert all(e.attempt == 2 for e in log[resumed:]), "no write of attempt 1 after attempt 2 began"
    assert stalled.process.poll() is None, "the stale worker just drops the job and goes on serving"


def test_fenced_writes_of_a_superseded_attempt_are_refused(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    job_id = submit(jobs, style_job(photos, 10))  # no worker: it waits in the queue
    client = clean.redis_client()
    client.register_script(scripts.ENSURE_GROUP)(args=[PREFIX])  # FLUSHALL took the group the gateway made
    [[_, [(entry, _)]]] = client.xreadgroup(scripts.GROUP, "old", {PREFIX + "jobs:queue": ">"}, count=1)
    start, progress = client.register_script(scripts.START), client.register_script(scripts.PROGRESS)
    checkpoint, finish = client.register_script(scripts.CHECKPOINT), client.register_script(scripts.FINISH)
    assert start(args=[PREFIX, job_id, entry, "old", 3, 60_000])[0] == b"run"
    assert progress(args=[PREFIX, job_id, 1, 1, 10, "[1, 2, 3, 6]", ""]) == b"ok"
    # Another worker claims the entry and starts attempt 2.
    client.xclaim(PREFIX + "jobs:queue", scripts.GROUP, "new", 0, [entry])
    assert start(args=[PREFIX, job_id, entry, "new", 3, 60_000])[:2] == [b"run", b"2"]
    assert progress(args=[PREFIX, job_id, 1, 7, 10, "[9, 9, 9, 27]", ""]) == b"superseded"
    assert checkpoint(args=[PREFIX, job_id, 1, 7, b"state"]) == b"superseded"
    assert finish(args=[PREFIX, job_id, 1, "SUCCEEDED", "", b"png", 60_000]) == b"superseded"
    record = client.hgetall(job_key(job_id))
    # Attempt 2 starts from the (absent) checkpoint: step 0; the refused write of attempt 1 left no trace.
    assert record[b"step"] == b"0" and record[b"state"] == b"RUNNING" and record[b"attempt"] == b"2"
    assert not client.exists(job_key(job_id) + ":result") and not client.exists(job_key(job_id) + ":checkpoint")
    assert finish(args=[PREFIX, job_id, 2, "SUCCEEDED", "", b"png", 60_000]) == b"ok"
    assert finish(args=[PREFIX, job_id, 2, "SUCCEEDED", "", b"png2", 60_000]) == b"SUCCEEDED"  # once only
    assert client.get(job_key(job_id) + ":result") == b"png"
    # Whatever became of the job, the stale attempt hears only that it was superseded.
    assert progress(args=[PREFIX, job_id, 1, 8, 10, "[9, 9, 9, 27]", ""]) == b"superseded"


def test_cancel_while_queued_and_while_running(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    queued = submit(jobs, style_job(photos, 20))
    cancelled = jobs.CancelJob(jobs_pb2.CancelJobRequest(id=queued), timeout=10, metadata=[ALICE])
    assert cancelled.state == STATE.JOB_STATE_CANCELLED and cancelled.error == "cancelled by the client"
    worker = clean.start_worker()
    running = submit(jobs, style_job(photos, LONG))
    step = wait_for_step(jobs, running, 5)
    cancelled = jobs.CancelJob(jobs_pb2.CancelJobRequest(id=running), timeout=10, metadata=[ALICE])
    assert cancelled.state == STATE.JOB_STATE_CANCELLED
    finished = 'genserve_jobs_finished_total{state="CANCELLED"}'
    assert wait_for(lambda: counter(worker.metrics(), finished) >= 1, timeout=10), "the worker noticed the cancel"
    log = events(jobs, running)
    assert_ended_once(log, STATE.JOB_STATE_CANCELLED)
    assert log[-2].step <= step + 2, "the worker stopped within a step of the cancel"
    assert [e.state for e in events(jobs, queued)] == [STATE.JOB_STATE_QUEUED, STATE.JOB_STATE_CANCELLED]
    # The worker is free again at once, and cancelling a finished job changes nothing.
    after = submit(jobs, style_job(photos, 5))
    assert events(jobs, after, timeout=30)[-1].state == STATE.JOB_STATE_SUCCEEDED
    again = jobs.CancelJob(jobs_pb2.CancelJobRequest(id=after), timeout=10, metadata=[ALICE])
    assert again.state == STATE.JOB_STATE_SUCCEEDED
    assert counter(worker.metrics(), finished) == 1


def test_a_cancel_the_heartbeat_notices_is_counted_once(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    worker = clean.start_worker(GENSERVE_JOB_HEARTBEAT_SECONDS="0.01")  # beats several times a step
    running = submit(jobs, style_job(photos, LONG))
    wait_for_step(jobs, running, 5)
    jobs.CancelJob(jobs_pb2.CancelJobRequest(id=running), timeout=10, metadata=[ALICE])
    assert_ended_once(events(jobs, running), STATE.JOB_STATE_CANCELLED)
    finished = 'genserve_jobs_finished_total{state="CANCELLED"}'
    assert wait_for(lambda: counter(worker.metrics(), finished) >= 1, timeout=10)
    assert counter(worker.metrics(), finished) == 1


def test_watch_resumes_from_an_event_id_without_missing_any(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    clean.start_worker()
    job_id = submit(jobs, style_job(photos, 40, preview_every=10))
    seen: list[jobs_pb2.JobEvent] = []
    call = jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job_id), timeout=60, metadata=[ALICE])
    for event in call:
        seen.append(event)
        if event.step >= 8:
            break
    call.cancel()  # the connection drops mid-job
    seen += events(jobs, job_id, after=seen[-1].event_id)
    full = events(jobs, job_id)
    assert [e.event_id for e in seen] == [e.event_id for e in full]
    assert [e.step for e in full if e.kind == KIND.JOB_EVENT_KIND_PROGRESS] == list(range(1, 41))
    assert [e.step for e in full if e.HasField("preview")] == [10, 20, 30, 40]
    assert events(jobs, job_id, after=full[-1].event_id) == []  # after the end: nothing, at once


def test_a_job_longer_than_the_claim_timeout_stays_with_its_live_worker(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    workers = [clean.start_worker(), clean.start_worker()]
    started = time.monotonic()
    job_id = submit(jobs, style_job(photos, 3 * LONG))
    log = events(jobs, job_id)
    assert time.monotonic() - started > 2 * CLAIM_IDLE_SECONDS, "the job must outlast the claim timeout"
    assert_ended_once(log, STATE.JOB_STATE_SUCCEEDED)
    assert get(jobs, job_id).attempt == 1
    assert not [e for e in log if e.kind == KIND.JOB_EVENT_KIND_RESUMED]
    assert sum(counter(w.metrics(), "genserve_jobs_claimed_total") for w in workers) == 0


def test_a_job_that_keeps_killing_workers_is_dead_lettered(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    job_id = submit(jobs, style_job(photos, 4 * LONG))
    for attempt in (1, 2, 3):
        worker = clean.start_worker()
        assert wait_for(lambda n=attempt: get(jobs, job_id).attempt >= n, timeout=30)
        begun = get(jobs, job_id).step
        # Killed once the attempt is under way: it has run a step of its own.
        assert wait_for(lambda s=begun: get(jobs, job_id).step > s, timeout=60)
        worker.process.kill()
        worker.process.wait()
        clean.forget(worker)
    clean.start_worker()  # the next worker to claim it gives up on it
    log = events(jobs, job_id)
    assert_ended_once(log, STATE.JOB_STATE_FAILED)
    assert "dead-lettered" in log[-1].error and "3 times" in log[-1].error


def test_a_stopping_worker_checkpoints_and_hands_its_job_back(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    leaving = clean.start_worker()
    job_id = submit(jobs, style_job(photos, LONG))
    reached = wait_for_step(jobs, job_id, CHECKPOINT_EVERY + 3)
    assert leaving.stop() == 0  # SIGTERM: finish the step, checkpoint, RELEASE, exit cleanly
    clean.forget(leaving)
    handed = get(jobs, job_id)
    assert handed.state == STATE.JOB_STATE_QUEUED and handed.step >= reached
    clean.start_worker()  # takes it at once: a released entry needs no idle timeout
    log = events(jobs, job_id)
    assert_ended_once(log, STATE.JOB_STATE_SUCCEEDED)
    [resumed] = [e for e in log if e.kind == KIND.JOB_EVENT_KIND_RESUMED]
    assert resumed.step == handed.step, "nothing done before the hand-back is redone"
    record = clean.redis_client().hgetall(job_key(job_id))
    assert record[b"crashes"] == b"0", "a clean hand-back is not a lost worker"
