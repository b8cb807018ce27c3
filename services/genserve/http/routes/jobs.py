"""The job routes: submit a style transfer as a durable job, read, list and cancel jobs, fetch the
result, and follow a job's events as a resumable SSE stream.

GET /v1/jobs/{id}/events sends each job event with its event id as the SSE `id:`; a client that
reconnects with `Last-Event-ID` (EventSource does so by itself) resumes right after that event,
through the client's `watch_job(after=...)`, which the job service serves from the job's event
history: no event is missed or repeated. The stream ends after the terminal event. A client that
resumes after the terminal event gets 204, which tells EventSource to stop reconnecting.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Query, Request, Response

from genserve.client import JobEvent
from genserve.http.bodies import read_body, request_body
from genserve.http.calls import TIMEOUT_HEADER, Call, front_door
from genserve.http.disconnect import EventStreamResponse, unless_disconnected
from genserve.http.errors import CallFailed, ErrorContext, from_client_error, named_stream, naming
from genserve.http.media import EVENTS, HEIGHT_HEADER, JSON, PNG, WIDTH_HEADER, json_response, negotiate, png_response
from genserve.http.routes.jobs_schema import (
    JOB_FIELDS,
    JobEventOut,
    JobOut,
    JobPageOut,
    JobResultOut,
    SubmitRequest,
    event_out,
    job_out,
    page_out,
    result_out,
    submit_fields,
)
from genserve.http.routes.vision_schema import STYLE_FORM
from genserve.http.schemas import schema_ref
from genserve.http.sse import event

router = APIRouter(tags=["jobs"])
T = TypeVar("T")
LAST_EVENT_ID = "Last-Event-ID"
# The resume point as the gRPC API names it, in this API's words.
EVENT_FIELDS = JOB_FIELDS.with_alias("after_event_id", LAST_EVENT_ID)


async def _called(request: Request, work: Awaitable[T]) -> T:
    with naming(JOB_FIELDS):
        return await unless_disconnected(request, work)


@router.post(
    "/v1/jobs",
    response_model=JobOut,
    summary="Submit a style transfer as a durable job",
    openapi_extra={"requestBody": request_body(SubmitRequest, STYLE_FORM)},
)
async def submit_job(request: Request, call: Call) -> Response:
    body, form = await read_body(request, SubmitRequest, STYLE_FORM)
    styles = body.styles_input()
    submitted = call.client.submit_style_transfer(
        body.content, styles, idempotency_key=body.idempotency_key, timeout=call.timeout, **body.options()
    )
    with naming(submit_fields(form)):
        job = await unless_disconnected(request, submitted)
    return json_response(job_out(job))


@router.get("/v1/jobs", response_model=JobPageOut, summary="Your jobs, newest first, a page at a time")
async def list_jobs(
    request: Request,
    call: Call,
    state: str = Query("", description='Only jobs in this state ("queued", "running", ...); empty = all.'),
    page_size: int = Query(0, description="Jobs per page, 1 to 100; 0 = 20."),
    page_token: str = Query("", description="next_page_token of the previous page; empty = the first page."),
) -> Response:
    listed = call.client.list_jobs(state=state, page_size=page_size, page_token=page_token, timeout=call.timeout)
    return json_response(page_out(await _called(request, listed)))


@router.get("/v1/jobs/{id}", response_model=JobOut, summary="A job's record")
async def get_job(id: str, request: Request, call: Call) -> Response:
    return json_response(job_out(await _called(request, call.client.get_job(id, timeout=call.timeout))))


@router.post("/v1/jobs/{id}/cancel", response_model=JobOut, summary="Cancel a queued or running job")
async def cancel_job(id: str, request: Request, call: Call) -> Response:
    return json_response(job_out(await _called(request, call.client.cancel_job(id, timeout=call.timeout))))


@router.get(
    "/v1/jobs/{id}/result",
    response_model=JobResultOut,
    summary="A succeeded job's image: the PNG (or JSON); 409 until it has succeeded",
    responses={
        200: {
            "description": "The PNG (the default), or JSON with Accept: application/json.",
            "headers": {name: {"schema": {"type": "integer"}} for name in (WIDTH_HEADER, HEIGHT_HEADER)},
            "content": {PNG: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def get_job_result(id: str, request: Request, call: Call) -> Response:
    media = negotiate(request.headers.get("accept"), (PNG, JSON))
    result = await _called(request, call.client.get_job_result(id, timeout=call.timeout))
    return png_response(result.image) if media == PNG else json_response(result_out(result))


@router.get(
    "/v1/jobs/{id}/events",
    summary="A job's events as SSE, resumable with Last-Event-ID; ends after the terminal event",
    responses={
        200: {
            "description": "One event per job event: `id:` its event id, `event:` its kind, `data:` the event.",
            "content": {
                EVENTS: {
                    "schema": {"type": "string"},
                    "x-events": {kind: schema_ref(JobEventOut) for kind in ("state", "progress", "resumed")},
                    "example": 'id: 1764892800000-0\nevent: state\ndata: {"event_id":"1764892800000-0",'
                    '"job_id":"0193a1f0c2e8b4d2c91a07","kind":"state","state":"queued",...}\n\n',
                }
            },
        },
        204: {"description": "Resumed after the terminal event: nothing more will come."},
    },
)
async def job_events(
    id: str,
    request: Request,
    call: Call,
    last_event_id: Annotated[
        str, Header(alias=LAST_EVENT_ID, description="Resume after this event id (EventSource sends it itself).")
    ] = "",
    after: str = Query("", description="Resume after this event id, for clients that cannot set Last-Event-ID."),
) -> Response:
    resume = last_event_id or after
    # A job may run for hours: the stream has a deadline only when the client asks for one.
    timeout = call.timeout if TIMEOUT_HEADER in request.headers else None
    events = named_stream(call.client.watch_job(id, after=resume, timeout=timeout), EVENT_FIELDS)
    try:
        # Awaited before answering, so an unknown job (or a bad Last-Event-ID) gets its status.
        first: JobEvent | None = await unless_disconnected(request, anext(events))
    except StopAsyncIteration:
        first = None
    except BaseException:
        await events.aclose()
        raise
    if first is None or (resume and not first.event_id):
        # Nothing after the resume point but the record's closing event: the client had the terminal one.
        await events.aclose()
        return Response(status_code=204)
    return EventStreamResponse(_events(first, events, front_door(request).errors))


async def _events(
    first: JobEvent, events: AsyncGenerator[JobEvent, None], errors: ErrorContext
) -> AsyncGenerator[bytes, None]:
    try:
        item: JobEvent | None = first
        while item is not None:
            data = event_out(item).model_dump(mode="json")
            yield event(data, kind=item.kind.value or "state", event_id=item.event_id)
            item = await anext(events, None)
    except CallFailed as failure:
        yield event(from_client_error(failure.error, failure.names, errors).body(), kind="error")
    finally:
        await events.aclose()
