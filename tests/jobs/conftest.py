"""Job-system fixtures: a real redis-server (AOF) on a free port, a gateway, and real worker processes."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import redis
from PIL import Image

from genserve.common.processes import PrivateRedis, ServerProcess
from genserve.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc, vision_pb2
from genserve.vision.samples import sample_image
from tests.conftest import ROOT, start_role

ALICE, BOB = ("authorization", "Bearer alice-key"), ("authorization", "Bearer bob-key")
API_KEYS = "alice:alice-key,bob:bob-key"
CHECKPOINT_EVERY = 10
CLAIM_IDLE_SECONDS = 2.0
# Fast claims and checkpoints, one torch thread per worker (two workers share the two cores).
WORKER_ENV = {
    "GENSERVE_JOB_CHECKPOINT_EVERY": str(CHECKPOINT_EVERY),
    "GENSERVE_JOB_CLAIM_IDLE_SECONDS": str(CLAIM_IDLE_SECONDS),
    "GENSERVE_JOB_HEARTBEAT_SECONDS": "0.4",
    "GENSERVE_TORCH_THREADS": "1",
    "GENSERVE_SHUTDOWN_NOTICE_SECONDS": "0",
}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class JobStack:
    redis: PrivateRedis
    gateway: ServerProcess
    log_dir: Path
    workers: list[ServerProcess] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.redis.url, "GENSERVE_API_KEYS": API_KEYS, **WORKER_ENV}

    def start_worker(self, **settings: str) -> ServerProcess:
        worker = start_role("worker", self.log_dir, {**self.env, **settings})
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobStack]:
    log_dir = tmp_path_factory.mktemp("job-logs")
    private = PrivateRedis(tmp_path_factory.mktemp("job-redis"))
    private.start()
    env = {"REDIS_URL": private.url, "GENSERVE_API_KEYS": API_KEYS, "GENSERVE_SHUTDOWN_NOTICE_SECONDS": "0"}
    try:
        gateway = start_role("gateway", log_dir, env)
    except Exception:
        private.stop()
        raise
    jobs = JobStack(private, gateway, log_dir)
    yield jobs
    jobs.stop_workers()
    gateway.stop()
    private.stop()


@pytest.fixture
def clean(stack: JobStack) -> Iterator[JobStack]:
    """Each test starts with no workers and an empty Redis, and stops the workers it started."""
    stack.client().flushall()
    yield stack
    stack.stop_workers()


@pytest.fixture(scope="package")
def jobs(stack: JobStack) -> Iterator[jobs_pb2_grpc.JobServiceStub]:
    with grpc.insecure_channel(stack.gateway.address) as channel:
        yield jobs_pb2_grpc.JobServiceStub(channel)


@pytest.fixture(scope="package")
def photos() -> tuple[bytes, bytes]:
    cache = ROOT / "var" / "packages"
    return png(sample_image("chelsea", cache).resize((72, 48))), png(sample_image("hubble", cache).resize((48, 48)))


def style_job(
    photos: tuple[bytes, bytes], steps: int = 20, key: str = "", **params: object
) -> jobs_pb2.SubmitStyleTransferRequest:
    content, style = photos
    values: dict[str, object] = {"iterations": steps, "max_size": 72}
    values.update(params)
    return jobs_pb2.SubmitStyleTransferRequest(
        request=vision_pb2.StyleTransferRequest(
            content=common_pb2.Image(data=content),
            styles=[vision_pb2.StyleImage(image=common_pb2.Image(data=style))],
            params=vision_pb2.StyleParams(**values),  # type: ignore[arg-type]
            seed=5,
        ),
        idempotency_key=key,
    )


def events(
    jobs: jobs_pb2_grpc.JobServiceStub, job_id: str, after: str = "", timeout: float = 120
) -> list[jobs_pb2.JobEvent]:
    request = jobs_pb2.WatchJobRequest(id=job_id, after_event_id=after)
    return list(jobs.WatchJob(request, timeout=timeout, metadata=[ALICE]))


def wait_for_step(jobs: jobs_pb2_grpc.JobServiceStub, job_id: str, step: int, timeout: float = 60) -> int:
    """Block until the job reports at least `step`; returns the step reported."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.GetJob(jobs_pb2.GetJobRequest(id=job_id), timeout=5, metadata=[ALICE])
        if job.step >= step:
            return job.step
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not reach step {step} in {timeout}s")
