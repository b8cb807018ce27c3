"""JobService through the gateway: ownership, idempotency, limits, validation, listing, the CLI."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import grpc
import pytest
from PIL import Image
from typer.testing import CliRunner

from genserve.cli import app
from genserve.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc, vision_pb2
from tests.common.test_images import png_declaring
from tests.conftest import TextStack, start_role, wait_for
from tests.jobs.conftest import ALICE, BOB, JobStack, events, style_job

STATE = jobs_pb2.JobState


def submit(
    jobs: jobs_pb2_grpc.JobServiceStub, request: jobs_pb2.SubmitStyleTransferRequest, who: tuple[str, str] = ALICE
) -> jobs_pb2.Job:
    return jobs.SubmitStyleTransfer(request, timeout=30, metadata=[who])


def code_of(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if not isinstance(result, jobs_pb2.Job | jobs_pb2.JobResult | jobs_pb2.ListJobsResponse):
            list(result)
    return info.value.code(), info.value.details()


def test_submit_returns_a_queued_job_at_once(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    started = time.monotonic()
    job = submit(jobs, style_job(photos, 30))
    assert time.monotonic() - started < 2.0
    assert job.state == STATE.JOB_STATE_QUEUED and job.total_steps == 30 and job.attempt == 0 and job.id
    assert job.HasField("created_at") and not job.HasField("started_at") and not job.HasField("expires_at")
    again = jobs.GetJob(jobs_pb2.GetJobRequest(id=job.id), timeout=10, metadata=[ALICE])
    assert again == job
    code, details = code_of(jobs.GetJobResult, jobs_pb2.GetJobResultRequest(id=job.id), timeout=10, metadata=[ALICE])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "QUEUED" in details


def test_the_same_idempotency_key_returns_the_same_job(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    first = submit(jobs, style_job(photos, 10, key="order-17"))
    assert submit(jobs, style_job(photos, 10, key="order-17")).id == first.id
    assert submit(jobs, style_job(photos, 10, key="order-18")).id != first.id
    assert submit(jobs, style_job(photos, 10, key="order-17"), who=BOB).id != first.id  # keys are per API key
    assert first.idempotency_key == "order-17"
    assert submit(jobs, style_job(photos, 10)).id != submit(jobs, style_job(photos, 10)).id


def test_another_key_cannot_see_watch_cancel_or_fetch_a_job(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    job_id = submit(jobs, style_job(photos, 10)).id
    for call, request in (
        (jobs.GetJob, jobs_pb2.GetJobRequest(id=job_id)),
        (jobs.CancelJob, jobs_pb2.CancelJobRequest(id=job_id)),
        (jobs.GetJobResult, jobs_pb2.GetJobResultRequest(id=job_id)),
        (jobs.WatchJob, jobs_pb2.WatchJobRequest(id=job_id)),
    ):
        code, details = code_of(call, request, timeout=10, metadata=[BOB])
        assert code == grpc.StatusCode.NOT_FOUND and job_id in details
    assert jobs.ListJobs(jobs_pb2.ListJobsRequest(), timeout=10, metadata=[BOB]).jobs == []
    assert jobs.GetJob(jobs_pb2.GetJobRequest(id=job_id), timeout=10, metadata=[ALICE]).state == STATE.JOB_STATE_QUEUED
    code, _ = code_of(jobs.GetJob, jobs_pb2.GetJobRequest(id=job_id), timeout=10)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = code_of(jobs.GetJob, jobs_pb2.GetJobRequest(id="no-such-job"), timeout=10, metadata=[ALICE])
    assert code == grpc.StatusCode.NOT_FOUND


def test_list_pages_newest_first_and_filters_by_state(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    ids = [submit(jobs, style_job(photos, 10)).id for _ in range(5)]
    jobs.CancelJob(jobs_pb2.CancelJobRequest(id=ids[1]), timeout=10, metadata=[ALICE])
    pages, token = [], ""
    while True:
        page = jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=2, page_token=token), timeout=10, metadata=[ALICE])
        pages.append([job.id for job in page.jobs])
        token = page.next_page_token
        if not token:
            break
    assert pages == [ids[::-1][0:2], ids[::-1][2:4], ids[::-1][4:5]]
    cancelled = jobs.ListJobs(jobs_pb2.ListJobsRequest(state=STATE.JOB_STATE_CANCELLED), timeout=10, metadata=[ALICE])
    assert [job.id for job in cancelled.jobs] == [ids[1]]
    code, details = code_of(jobs.ListJobs, jobs_pb2.ListJobsRequest(page_size=500), timeout=10, metadata=[ALICE])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_size must be in [1, 100]" in details


def test_a_full_queue_says_which_limit(clean: JobStack, photos: tuple[bytes, bytes]) -> None:
    env = {**clean.env, "GENSERVE_JOB_MAX_ACTIVE": "3", "GENSERVE_JOB_MAX_ACTIVE_PER_KEY": "2"}
    gateway = start_role("gateway", clean.log_dir, env)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            small = jobs_pb2_grpc.JobServiceStub(channel)
            first = submit(small, style_job(photos, 10))
            submit(small, style_job(photos, 10))
            code, details = code_of(small.SubmitStyleTransfer, style_job(photos, 10), timeout=10, metadata=[ALICE])
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "2 jobs queued or running" in details
            assert "GENSERVE_JOB_MAX_ACTIVE_PER_KEY" in details
            submit(small, style_job(photos, 10), who=BOB)
            code, details = code_of(small.SubmitStyleTransfer, style_job(photos, 10), timeout=10, metadata=[BOB])
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "3 jobs queued or running is the limit" in details
            small.CancelJob(jobs_pb2.CancelJobRequest(id=first.id), timeout=10, metadata=[ALICE])
            assert submit(small, style_job(photos, 10)).state == STATE.JOB_STATE_QUEUED  # a slot came free
    finally:
        gateway.stop()


def _bad(photos: tuple[bytes, bytes], **changes: object) -> jobs_pb2.SubmitStyleTransferRequest:
    request = style_job(photos, 10)
    for name, value in changes.items():
        if name == "content":
            request.request.content.data = value  # type: ignore[assignment]
        elif name == "styles":
            del request.request.styles[:]
            request.request.styles.extend(value)  # type: ignore[arg-type]
        elif name == "idempotency_key":
            request.idempotency_key = value  # type: ignore[assignment]
        elif name == "style_layers":
            request.request.params.style_layers.extend(value)  # type: ignore[arg-type]
        else:
            setattr(request.request.params, name, value)
    return request


INVALID, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
BAD_SUBMITS = [
    ("too many steps", {"iterations": 5000}, INVALID, "iterations must be in [1, 2000]"),
    ("too large", {"max_size": 4096}, INVALID, "max_size must be in [32, 1024]"),
    ("unknown layer", {"content_layer": "relu9_9"}, INVALID, "content_layer 'relu9_9' is not a VGG16 layer; valid:"),
    ("NaN weight", {"style_weight": math.nan}, INVALID, "style_weight must be a finite number"),
    ("bad style layer weight", {"style_layers": [common_pb2.LayerWeight(layer="relu1_1", weight=-2)]}, INVALID,
     "params.style_layers[0].weight must be >= 0"),
    ("preview interval", {"preview_every": -1}, INVALID, "preview_every must be in [0, 1000]"),
    ("undecodable content", {"content": b"not an image"}, INVALID, "content is not a readable image"),
    ("pixel bomb", {"content": png_declaring(60_000, 60_000)}, EXHAUSTED, "content is 60000x60000"),
    ("no style", {"styles": []}, INVALID, "styles must hold at least one style image"),
    ("undecodable style", {"styles": [vision_pb2.StyleImage(image=common_pb2.Image(data=b"junk"))]}, INVALID,
     "styles[0].image is not a readable image"),
    ("long idempotency key", {"idempotency_key": "k" * 129}, INVALID, "idempotency_key must be at most 128"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "changes", "code", "message"), BAD_SUBMITS, ids=[c[0] for c in BAD_SUBMITS])
def test_bad_submissions_are_refused_before_anything_is_queued(
    clean: JobStack,
    jobs: jobs_pb2_grpc.JobServiceStub,
    photos: tuple[bytes, bytes],
    name: str,
    changes: dict[str, object],
    code: grpc.StatusCode,
    message: str,
) -> None:
    got, details = code_of(jobs.SubmitStyleTransfer, _bad(photos, **changes), timeout=30, metadata=[ALICE])
    assert got == code and message in details, details
    assert clean.redis_client().xlen("genserve:jobs:queue") == 0


def test_without_redis_the_job_api_is_unavailable(text_stack: TextStack) -> None:
    with grpc.insecure_channel(text_stack.gateway.address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        code, details = code_of(stub.GetJob, jobs_pb2.GetJobRequest(id="x"), timeout=10)
    assert code == grpc.StatusCode.UNAVAILABLE and "REDIS_URL" in details


def test_the_gateway_gauges_count_queued_jobs(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes]
) -> None:
    for _ in range(3):
        submit(jobs, style_job(photos, 10))

    def queued() -> float | None:
        found = re.search(r"^genserve_jobs_queued (\S+)$", clean.gateway.metrics(), re.M)
        return float(found.group(1)) if found else None

    assert wait_for(lambda: queued() == 3, timeout=10), "genserve_jobs_queued never showed the 3 queued jobs"


def test_the_jobs_cli_submits_watches_and_saves_the_result(
    clean: JobStack, jobs: jobs_pb2_grpc.JobServiceStub, photos: tuple[bytes, bytes], tmp_path: Path
) -> None:
    clean.start_worker()
    (tmp_path / "content.png").write_bytes(photos[0])
    (tmp_path / "style.png").write_bytes(photos[1])
    common = ["--address", clean.gateway.address, "--api-key", "alice-key"]
    runner = CliRunner()
    output, preview = tmp_path / "styled.png", tmp_path / "preview.png"
    submitted = runner.invoke(
        app,
        ["jobs", "submit", str(tmp_path / "content.png"), "--style", str(tmp_path / "style.png"),
         "--iterations", "12", "--max-size", "64", "--preview-every", "6", "--watch",
         "--output", str(output), "--preview", str(preview), *common],
    )  # fmt: skip
    assert submitted.exit_code == 0, submitted.output
    assert Image.open(output).size == (64, 43) and preview.exists()
    listed = runner.invoke(app, ["jobs", "list", *common])
    assert listed.exit_code == 0 and "succeeded" in listed.output.lower()
    missing = runner.invoke(app, ["jobs", "cancel", "nope", *common])
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output
    job_id = re.search(r"job (\S+)", submitted.output)
    assert job_id is not None and events(jobs, job_id.group(1))[-1].state == STATE.JOB_STATE_SUCCEEDED
