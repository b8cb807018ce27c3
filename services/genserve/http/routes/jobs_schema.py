"""Request and answer models of the job routes: a style transfer submitted as a durable job, its
record, its events and its result. Times are ISO 8601 (UTC), null while unset."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from genserve.client import Job, JobEvent, JobPage, JobResult
from genserve.client.requests import StyleOptions
from genserve.http.errors import FieldNames
from genserve.http.routes.vision_schema import STYLE_FORM, StyleLossesOut, StyleRequest, field_names, losses_out
from genserve.http.schemas import ImageOut, image_out

# A job the caller cannot see (unknown, expired, or another key's) is the path's `id`.
JOB_FIELDS = FieldNames(
    {"id": "id", "state": "state", "page_size": "page_size", "page_token": "page_token"},
    not_found="id",
    not_found_code="job_not_found",
)


class SubmitRequest(StyleRequest):
    """A style transfer to run as a durable job: the style-preview request with the job caps."""

    idempotency_key: str = Field(
        "", description="A second submit with the same key (and API key) returns the first job; at most 128 characters."
    )

    def options(self) -> StyleOptions:
        return StyleOptions(**self.given("content", "styles", "style_weights", "idempotency_key"))  # type: ignore[typeddict-item]


def submit_fields(form: bool) -> FieldNames:
    """The job service checks a submit as the vision service checks a preview, in the same words."""
    return field_names(SubmitRequest, STYLE_FORM, form)


class JobOut(BaseModel):
    """A job's record."""

    id: str = Field(description="The job's id.")
    state: str = Field(description='"queued", "running", "succeeded", "failed" or "cancelled".')
    step: int = Field(description="Steps done.")
    total_steps: int = Field(description="Steps planned.")
    losses: StyleLossesOut | None = Field(None, description="The losses at the latest step.")
    created_at: datetime | None = Field(None, description="When it was submitted.")
    started_at: datetime | None = Field(None, description="When a worker first took it; null while queued.")
    finished_at: datetime | None = Field(None, description="When it reached a terminal state; null before.")
    attempt: int = Field(description="1 for the first run; higher when another worker resumed the job.")
    error: str = Field(description="Why it failed (or was cancelled); empty otherwise.")
    idempotency_key: str = Field(description="The key it was submitted with, if any.")
    expires_at: datetime | None = Field(None, description="When the record and result expire (once finished).")


class JobPageOut(BaseModel):
    """One page of the caller's jobs, newest first."""

    jobs: list[JobOut] = Field(description="The jobs of this page.")
    next_page_token: str = Field(description="Pass as page_token for the next page; empty on the last page.")


class JobEventOut(BaseModel):
    """The data of one event of GET /v1/jobs/{id}/events."""

    event_id: str = Field(description="The SSE id: send it as Last-Event-ID to resume after it; empty on a closing "
                          "event made from the job's record.")  # fmt: skip
    job_id: str = Field(description="The job's id.")
    kind: str = Field(description='"state" (the job changed state), "progress" or "resumed" (another attempt).')
    state: str = Field(description="The job's state after this event.")
    step: int = Field(description="Steps done.")
    total_steps: int = Field(description="Steps planned.")
    losses: StyleLossesOut | None = Field(None, description="The losses at this step (progress events).")
    preview: ImageOut | None = Field(None, description="The image so far, every preview_every steps.")
    attempt: int = Field(description="The attempt this event belongs to, from 1.")
    time: datetime | None = Field(None, description="When it happened.")
    error: str = Field(description="On the terminal event: why it failed or was cancelled.")
    terminal: bool = Field(description="True on the last event of the stream.")


class JobResultOut(BaseModel):
    """A succeeded job's image (with Accept: application/json)."""

    id: str = Field(description="The job's id.")
    image: ImageOut = Field(description="The styled image.")
    losses: StyleLossesOut | None = Field(None, description="The losses at the last step.")


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        state=job.state.value,
        step=job.step,
        total_steps=job.total_steps,
        losses=losses_out(job.losses),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempt=job.attempt,
        error=job.error,
        idempotency_key=job.idempotency_key,
        expires_at=job.expires_at,
    )


def page_out(page: JobPage) -> JobPageOut:
    return JobPageOut(jobs=[job_out(job) for job in page.jobs], next_page_token=page.next_page_token)


def event_out(event: JobEvent) -> JobEventOut:
    return JobEventOut(
        event_id=event.event_id,
        job_id=event.job_id,
        kind=event.kind.value,
        state=event.state.value,
        step=event.step,
        total_steps=event.total_steps,
        losses=losses_out(event.losses),
        preview=image_out(event.preview) if event.preview is not None else None,
        attempt=event.attempt,
        time=event.time,
        error=event.error,
        terminal=event.terminal,
    )


def result_out(result: JobResult) -> JobResultOut:
    return JobResultOut(id=result.id, image=image_out(result.image), losses=losses_out(result.losses))
