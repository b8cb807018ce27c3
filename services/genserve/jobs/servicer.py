"""JobService, served by the gateway: the job API over Redis, owned by the caller's API key.

Submissions are checked here, before anything is queued, by the one style-request parser the
vision service uses too (with the job caps instead of the preview caps). The gateway never imports torch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from genserve.common.caller import current_principal
from genserve.common.config import ImageSettings, JobSettings
from genserve.common.errors import InvalidArgument
from genserve.common.images import ImageLimits, decode_image, stored_png_message
from genserve.common.metrics import Metrics
from genserve.common.seeds import fresh_seed
from genserve.common.style_request import StyleParams, StyleRequest, params_to_json, parse_style_request
from genserve.jobs.queue import JobQueue, NewJob
from genserve.jobs.records import STATES, JobEventRecord, JobRecord
from genserve.v1 import jobs_pb2, jobs_pb2_grpc, vision_pb2

MAX_IDEMPOTENCY_KEY = 128
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
EVENT_KINDS = {
    "state": jobs_pb2.JOB_EVENT_KIND_STATE,
    "progress": jobs_pb2.JOB_EVENT_KIND_PROGRESS,
    "resumed": jobs_pb2.JOB_EVENT_KIND_RESUMED,
}


def state_value(state: str) -> jobs_pb2.JobState.ValueType:
    return jobs_pb2.JobState.Value(f"JOB_STATE_{state}")


def _timestamp(ms: int) -> Timestamp | None:
    if not ms:
        return None
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def _losses(values: tuple[float, float, float, float] | None) -> vision_pb2.StyleLosses | None:
    if values is None:
        return None
    content, style, tv, total = values
    return vision_pb2.StyleLosses(content=content, style=style, tv=tv, total=total)


def job_message(record: JobRecord) -> jobs_pb2.Job:
    return jobs_pb2.Job(
        id=record.id,
        state=state_value(record.state),
        step=record.step,
        total_steps=record.total_steps,
        losses=_losses(record.losses),
        created_at=_timestamp(record.created_ms),
        started_at=_timestamp(record.started_ms),
        finished_at=_timestamp(record.finished_ms),
        attempt=record.attempt,
        error=record.error,
        idempotency_key=record.idempotency_key,
        expires_at=_timestamp(record.expires_ms),
    )


def event_message(job_id: str, event: JobEventRecord) -> jobs_pb2.JobEvent:
    message = jobs_pb2.JobEvent(
        event_id=event.event_id,
        job_id=job_id,
        kind=EVENT_KINDS.get(event.kind, jobs_pb2.JOB_EVENT_KIND_UNSPECIFIED),
        state=state_value(event.state),
        step=event.step,
        total_steps=event.total_steps,
        losses=_losses(event.losses),
        attempt=event.attempt,
        time=_timestamp(event.time_ms),
        error=event.error,
    )
    if event.preview is not None:
        message.preview.CopyFrom(stored_png_message(event.preview))
    return message


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(
        self, queue: Callable[[], JobQueue], settings: JobSettings, images: ImageSettings, metrics: Metrics
    ) -> None:
        self._queue = queue
        self.settings = settings
        self.metrics = metrics
        self.limits = ImageLimits(images.max_image_pixels, images.max_image_bytes)

    @property
    def queue(self) -> JobQueue:
        return self._queue()

    def _check_images(self, request: StyleRequest) -> None:
        decode_image(request.content, "content", self.limits)
        for i, (image, _) in enumerate(request.styles):
            decode_image(image, f"styles[{i}].image", self.limits)

    async def SubmitStyleTransfer(
        self, request: jobs_pb2.SubmitStyleTransferRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        key = request.idempotency_key
        if len(key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidArgument(f"idempotency_key must be at most {MAX_IDEMPOTENCY_KEY} characters, got {len(key)}")
        style = request.request
        checked = parse_style_request(
            style,
            StyleParams(),
            self.settings.max_steps,
            self.settings.max_size,
            style.seed if style.HasField("seed") else fresh_seed(),
        )
        await asyncio.to_thread(self._check_images, checked)  # decoding is CPU work: off the event loop
        job = NewJob(
            owner=current_principal.get(),
            idempotency_key=key,
            params_json=params_to_json(checked.params),
            total_steps=checked.params.iterations,
            seed=checked.params.seed,
            preview_every=checked.preview_every,
            content=checked.content,
            styles=list(checked.styles),
        )
        record, created = await self.queue.submit(job)
        if created:
            self.metrics.jobs_submitted.inc()
        return job_message(record)

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.Job:
        return job_message(await self.queue.get(request.id, current_principal.get()))

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.Job:
        return job_message(await self.queue.cancel(request.id, current_principal.get()))

    async def GetJobResult(
        self, request: jobs_pb2.GetJobResultRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.JobResult:
        record, data = await self.queue.result(request.id, current_principal.get())
        return jobs_pb2.JobResult(id=record.id, image=stored_png_message(data), losses=_losses(record.losses))

    async def ListJobs(
        self, request: jobs_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.ListJobsResponse:
        size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be in [1, {MAX_PAGE_SIZE}] (0 = {DEFAULT_PAGE_SIZE}), got {size}")
        state = ""
        if request.state:
            names = {state_value(name): name for name in STATES}
            if request.state not in names:
                raise InvalidArgument(f"state {request.state} is not a known job state")
            state = names[request.state]
        jobs, token = await self.queue.list(current_principal.get(), state, size, request.page_token)
        return jobs_pb2.ListJobsResponse(jobs=[job_message(job) for job in jobs], next_page_token=token)

    async def WatchJob(
        self, request: jobs_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        async for event in self.queue.events(request.id, current_principal.get(), request.after_event_id):
            yield event_message(request.id, event)
