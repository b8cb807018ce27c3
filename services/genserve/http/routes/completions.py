"""POST /v1/completions (OpenAI's completions API, unary and streamed) and POST /v1/chat/completions
(a 404 that says why).

Each prompt is one gRPC call (Generate, or GenerateStream when `stream` is set), all made at
once. Every stream's first piece is awaited before the answer starts, so a refused request gets its
real status (400, 401, 404, 429 ...) and not a 200 followed by an error event; a failure after
that is sent as an event `data: {"error": {...}}` and the stream ends without [DONE].
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response

from genserve.client import Generation, TextPiece
from genserve.client.requests import GenerateOptions
from genserve.http.calls import Call, GatewayCall, front_door
from genserve.http.completion_schema import (
    COMPLETION_FIELDS,
    CompletionRequest,
    CompletionResponse,
    completion_id,
    completion_response,
    logprobs_of,
    now,
    usage_of,
)
from genserve.http.disconnect import EventStreamResponse, unless_disconnected
from genserve.http.errors import ApiError, CallFailed, ErrorContext, FieldNames, from_client_error, named_stream, naming
from genserve.http.sse import DONE, event, merged, started

router = APIRouter(tags=["text"])

CHAT_REFUSAL = (
    "chat completions are not served here: the text models are character-level models of Shakespeare's plays, "
    "trained on the plays' raw text with no notion of chat roles, turns or instructions, so any mapping of "
    "messages to a prompt would be a pretence. Use POST /v1/completions with a play-style prompt, e.g. "
    '{"prompt": "ROMEO:\\n", "max_tokens": 200}.'
)


def _names(request: CompletionRequest, position: int) -> FieldNames:
    """Field names for prompt `position`'s call: a list's prompt is reported as prompt[i]."""
    return (
        COMPLETION_FIELDS
        if isinstance(request.prompt, str)
        else COMPLETION_FIELDS.with_alias("prompt", f"prompt[{position}]")
    )


def _checked_prompts(request: CompletionRequest, max_prompts: int) -> list[str]:
    request.refuse_unsupported()
    prompts = request.prompts()
    if not prompts:
        raise ApiError(400, "prompt must be a string or a non-empty list of strings", param="prompt")
    if len(prompts) > max_prompts:
        raise ApiError(
            400,
            f"prompt has {len(prompts)} prompts; at most {max_prompts} per request (GENSERVE_HTTP_MAX_PROMPTS)",
            param="prompt",
        )
    return prompts


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    summary="Complete one prompt or several (OpenAI's completions API)",
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE chunks with stream=true"}},
)
async def create_completion(body: CompletionRequest, request: Request, call: Call) -> Response:
    prompts = _checked_prompts(body, front_door(request).settings.max_prompts)
    options = body.options()
    if body.stream:
        return await _stream(body, request, call, prompts, options)
    generations = await unless_disconnected(request, _generate_all(body, call, prompts, options))
    return Response(completion_response(body, generations).model_dump_json(), media_type="application/json")


@router.post("/v1/chat/completions", status_code=404, summary="Not served: 404 with the reason")
async def chat_completions() -> Response:
    raise ApiError(404, CHAT_REFUSAL, code="chat_not_supported")


async def _generate_all(
    body: CompletionRequest, call: GatewayCall, prompts: list[str], options: GenerateOptions
) -> list[Generation]:
    async def one(position: int, prompt: str) -> Generation:
        with naming(_names(body, position)):
            return await call.client.generate(prompt, timeout=call.timeout, **options)

    try:
        # A task group: the first failure cancels the other prompts' calls.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(position, prompt)) for position, prompt in enumerate(prompts)]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]


async def _stream(
    body: CompletionRequest, request: Request, call: GatewayCall, prompts: list[str], options: GenerateOptions
) -> Response:
    streams: list[AsyncIterator[TextPiece]] = [
        named_stream(call.client.generate_stream(prompt, timeout=call.timeout, **options), _names(body, position))
        for position, prompt in enumerate(prompts)
    ]
    if len(streams) > 1:
        # Every prompt's first piece (or refusal) before the answer starts, not only the quickest one's.
        streams = await unless_disconnected(request, started(streams))
    pieces = merged(streams)
    try:
        first = await unless_disconnected(request, anext(pieces))
    except StopAsyncIteration:
        first = None
    except BaseException:
        await pieces.aclose()
        raise
    return EventStreamResponse(_events(body, prompts, first, pieces, front_door(request).errors))


async def _events(
    body: CompletionRequest,
    prompts: list[str],
    first: tuple[int, TextPiece] | None,
    pieces: AsyncGenerator[tuple[int, TextPiece], None],
    errors: ErrorContext,
) -> AsyncGenerator[bytes, None]:
    """OpenAI `text_completion` chunks, one per piece of text, then the usage chunk (if asked), then [DONE]."""
    per_prompt = body.completions_per_prompt()
    head: dict[str, Any] = {
        "id": completion_id(),
        "object": "text_completion",
        "created": now(),
        "model": first[1].model if first else body.model,
    }
    offsets: dict[int, int] = {}  # choice index → character offset of its next text in prompt + completion
    prompt_tokens = completion_tokens = 0

    def chunk(position: int, piece: TextPiece) -> bytes | None:
        nonlocal prompt_tokens, completion_tokens
        prompt_tokens += piece.prompt_tokens  # on each prompt's first piece only
        completion_tokens += piece.completion_tokens  # on each completion's last piece only
        if not piece.text and not piece.finish_reason:
            return None
        index = position * per_prompt + piece.index
        offset = offsets.get(index, len(prompts[position]))
        offsets[index] = offset + len(piece.text)
        choice: dict[str, Any] = {
            "text": piece.text,
            "index": index,
            "logprobs": logprobs_of(piece.tokens, offset) if body.logprobs is not None else None,
            "finish_reason": piece.finish_reason or None,
        }
        if body.temperatures:
            choice["temperature"] = piece.temperature
        return event({**head, "choices": [choice]})

    try:
        if first is not None:
            encoded = chunk(*first)
            if encoded is not None:
                yield encoded
        async for position, piece in pieces:
            encoded = chunk(position, piece)
            if encoded is not None:
                yield encoded
    except CallFailed as failure:
        yield event(from_client_error(failure.error, failure.names, errors).body())
        return
    finally:
        await pieces.aclose()
    if body.stream_options is not None and body.stream_options.include_usage:
        yield event({**head, "choices": [], "usage": usage_of(prompt_tokens, completion_tokens).model_dump()})
    yield DONE
