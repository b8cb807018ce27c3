"""Job-system fixtures: a real redis-server (AOF) on a free port, a gateway, and real worker processes
(genserve.testing.JobStack)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import grpc
import pytest
from PIL import Image

from genserve.testing import JobStack
from genserve.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc, vision_pb2
from genserve.vision.samples import sample_image
from tests.conftest import MODEL_STORE, ROOT, wait_for

ALICE, BOB = ("authorization", "Bearer alice-key"), ("authorization", "Bearer bob-key")
API_KEYS = {"alice": "alice-key", "bob": "bob-key"}
CHECKPOINT_EVERY = 10
CLAIM_IDLE_SECONDS = 2.0
# Fast claims and checkpoints, one torch thread per worker (two workers share the two cores).
WORKER_ENV = {
    "GENSERVE_JOB_CHECKPOINT_EVERY": str(CHECKPOINT_EVERY),
    "GENSERVE_JOB_CLAIM_IDLE_SECONDS": str(CLAIM_IDLE_SECONDS),
    "GENSERVE_JOB_HEARTBEAT_SECONDS": "0.4",
    "GENSERVE_TORCH_THREADS": "1",
}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobStack]:
    with JobStack(MODEL_STORE, API_KEYS, worker_env=WORKER_ENV, work_dir=tmp_path_factory.mktemp("jobs")) as jobs:
        yield jobs


@pytest.fixture
def clean(stack: JobStack) -> Iterator[JobStack]:
    """Each test starts with no workers and an empty Redis, and stops the workers it started."""
    with contextlib.closing(stack.redis_client()) as client:
        client.flushall()
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
    seen = 0

    def reached() -> bool:
        nonlocal seen
        seen = jobs.GetJob(jobs_pb2.GetJobRequest(id=job_id), timeout=5, metadata=[ALICE]).step
        return seen >= step

    assert wait_for(reached, timeout), f"job {job_id} did not reach step {step} in {timeout}s (at {seen})"
    return seen
