"""POST /v1/vision/dream and POST /v1/vision/style-preview: an image in (JSON with base64, or a
multipart form), the result out as the `Accept` header asks.

- `image/png` (the default): the PNG, its seed and size in X-Genserve-* headers;
- `application/json`: `{"image": {"png", "width", "height"}, "seed"}`;
- `text/event-stream`: `event: progress` per step (with a `preview` image every `preview_every`
  steps), then `event: result`, then the stream ends; a failure after it started is
  `event: error` with the error body.

Both are one server stream of the vision service (Dream, StylePreview). Its first event is
awaited before an SSE answer starts, so a refused request gets its real status, as completions
do; a client that leaves cancels the stream, and with it the optimisation.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from genserve.client import GenserveClientError, ImageResult
from genserve.http.bodies import read_body, request_body
from genserve.http.calls import Call, front_door
from genserve.http.disconnect import EventStreamResponse, unless_disconnected
from genserve.http.errors import CallFailed, ErrorContext, FieldNames, from_client_error, named_stream
from genserve.http.media import EVENTS, IMAGE_HEADERS, JSON, PNG, json_response, negotiate, png_response
from genserve.http.routes.vision_schema import (
    DREAM_FORM,
    STYLE_FORM,
    DreamProgressEvent,
    DreamRequest,
    ImageAnswer,
    StyleProgressEvent,
    StyleRequest,
    dream_event,
    field_names,
    style_event,
)
from genserve.http.schemas import image_out, schema_ref
from genserve.http.sse import event

router = APIRouter(tags=["vision"])
# The answers an image route offers, the first being the one without an Accept header.
OFFERED = (PNG, JSON, EVENTS)


class Progress(Protocol):
    """What a dream's and a style preview's events have in common."""

    @property
    def seed(self) -> int: ...

    @property
    def result(self) -> ImageResult | None: ...


P = TypeVar("P", bound=Progress)


def image_responses(progress: type[BaseModel], what: str) -> dict[int | str, dict[str, Any]]:
    """The 200 answer's other media types (FastAPI documents the JSON one from `response_model`)."""
    headers = {name: {"schema": {"type": "integer"}} for name in IMAGE_HEADERS}
    events = {
        "schema": {"type": "string"},
        "x-events": {"progress": schema_ref(progress), "result": schema_ref(ImageAnswer)},
        "example": 'event: progress\ndata: {"step":1,...}\n\nevent: result\ndata: {"image":{"png":"iVBOR...",'
        '"width":64,"height":48},"seed":7}\n\n',
    }
    return {
        200: {
            "description": f"The {what} as a PNG (the default), JSON, or SSE progress events then the result.",
            "headers": headers,
            "content": {PNG: {"schema": {"type": "string", "format": "binary"}}, EVENTS: events},
        }
    }


@router.post(
    "/v1/vision/dream",
    response_model=ImageAnswer,
    summary="DeepDream an image: the PNG, JSON, or SSE progress with previews",
    responses=image_responses(DreamProgressEvent, "dream"),
    openapi_extra={"requestBody": request_body(DreamRequest, DREAM_FORM)},
)
async def dream(request: Request, call: Call) -> Response:
    media = negotiate(request.headers.get("accept"), OFFERED)
    body, form = await read_body(request, DreamRequest, DREAM_FORM)
    stream = call.client.dream_stream(body.image, timeout=call.timeout, **body.options())
    names = field_names(DreamRequest, DREAM_FORM, form)
    return await answer(request, media, stream, names, dream_event)


@router.post(
    "/v1/vision/style-preview",
    response_model=ImageAnswer,
    summary="A small synchronous style transfer: the PNG, JSON, or SSE progress with previews",
    responses=image_responses(StyleProgressEvent, "styled image"),
    openapi_extra={"requestBody": request_body(StyleRequest, STYLE_FORM)},
)
async def style_preview(request: Request, call: Call) -> Response:
    media = negotiate(request.headers.get("accept"), OFFERED)
    body, form = await read_body(request, StyleRequest, STYLE_FORM)
    styles = body.styles_input()
    stream = call.client.style_preview_stream(body.content, styles, timeout=call.timeout, **body.options())
    names = field_names(StyleRequest, STYLE_FORM, form)
    return await answer(request, media, stream, names, style_event)


async def answer(
    request: Request, media: str, stream: AsyncIterator[P], names: FieldNames, progress: Callable[[P], BaseModel]
) -> Response:
    """The stream's result as `media`: awaited whole for PNG and JSON, event by event for SSE."""
    events = named_stream(stream, names)
    if media == EVENTS:
        try:
            first: P | None = await unless_disconnected(request, anext(events))
        except StopAsyncIteration:
            first = None
        except BaseException:
            await events.aclose()
            raise
        return EventStreamResponse(_events(first, events, progress, front_door(request).errors))
    result, seed = await unless_disconnected(request, _final(events))
    if media == PNG:
        return png_response(result, seed)
    return json_response(ImageAnswer(image=image_out(result), seed=seed))


def _no_result() -> GenserveClientError:
    return GenserveClientError("the vision service's stream ended without a result", code="INTERNAL")


async def _final(events: AsyncGenerator[P, None]) -> tuple[ImageResult, int]:
    try:
        async for item in events:
            if item.result is not None:
                return item.result, item.seed
    finally:
        await events.aclose()
    raise _no_result()


async def _events(
    first: P | None,
    events: AsyncGenerator[P, None],
    progress: Callable[[P], BaseModel],
    errors: ErrorContext,
) -> AsyncGenerator[bytes, None]:
    """`progress` events, then the `result` event; or an `error` event when the stream fails."""
    try:
        item = first
        while item is not None:
            if item.result is not None:
                yield event(ImageAnswer(image=image_out(item.result), seed=item.seed).model_dump(), kind="result")
                return
            yield event(progress(item).model_dump(), kind="progress")
            item = await anext(events, None)
        yield event(from_client_error(_no_result(), FieldNames(), errors).body(), kind="error")
    except CallFailed as failure:
        yield event(from_client_error(failure.error, failure.names, errors).body(), kind="error")
    finally:
        await events.aclose()
