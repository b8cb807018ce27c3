"""The one place HTTP statuses and error bodies come from.

Every failure an HTTP client sees is `{"error": {"message", "type", "param", "code"}}`, the shape
OpenAI's API uses (so the `openai` package raises its matching exception), with no stack trace:

- a gRPC status from the gateway or a service (a `genserve.client` exception) → `STATUS_BY_GRPC`,
  its message kept (it says what was wrong and what is allowed); `param` is the request field the
  message starts with, in the route's own names (`FieldNames`);
- FastAPI's request-validation errors (422 by default) → 400 with the field in `param`;
- the front door's own refusals (a body over the size limit, an unsupported parameter) → `ApiError`;
- anything unexpected → 500 "internal error", the traceback only in the log.

Routes wrap their gateway calls in `naming(FIELDS)` so a status is reported with their field names.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from genserve.client import GenserveClientError

log = logging.getLogger(__name__)

# gRPC status name → HTTP status. FAILED_PRECONDITION is 409 Conflict: the call does not fit the
# object's state (a job's result before it succeeded); 412 is HTTP's answer to conditional headers
# (If-Match), which this API does not use. CANCELLED is 499, nginx's "client closed request": the
# caller (or something on its behalf) gave up.
STATUS_BY_GRPC: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

# HTTP status → the error body's `type`, in OpenAI's vocabulary where it has a word for it.
TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    499: "cancelled_error",
    500: "server_error",
    501: "server_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class ApiError(Exception):
    """A failure as the HTTP client will see it: status, OpenAI-style body and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    @property
    def type(self) -> str:
        return TYPE_BY_STATUS.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


@dataclass(frozen=True)
class FieldNames:
    """How one route names the fields that the gRPC messages speak of.

    `aliases` maps a gRPC field path ("sampling.top_p", "top_logprobs") to the route's parameter
    ("top_p", "logprobs"); an indexed path with a member ("styles[0].weight") is looked up whole,
    then without its index ("styles.weight", the index kept: "style_weights[0]"), then by its
    name alone. `not_found` is the parameter a NOT_FOUND is about ("model"), reported with
    `not_found_code` ("model_not_found", as OpenAI does); a route whose NOT_FOUND may be about
    one of several things lists `not_found_cases`: (a word the message holds, the parameter, the
    code), the first whose word is in the message taken.
    """

    aliases: Mapping[str, str] = field(default_factory=dict)
    not_found: str | None = None
    not_found_code: str | None = None
    not_found_cases: tuple[tuple[str, str, str], ...] = ()

    def with_alias(self, grpc_name: str, name: str) -> FieldNames:
        return FieldNames({**self.aliases, grpc_name: name}, self.not_found, self.not_found_code, self.not_found_cases)

    def not_found_param(self, message: str) -> tuple[str | None, str | None]:
        """The parameter and code of a NOT_FOUND with `message` (None, None: no parameter)."""
        for word, param, code in self.not_found_cases:
            if word in message:
                return param, code
        return self.not_found, self.not_found_code


NO_FIELDS = FieldNames()

# The field a service's message starts with: "sampling.top_p must be …", "stop[1] must have …",
# "styles[0].weight must be …".
LEADING_FIELD = re.compile(
    r"^(?P<name>[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)(?P<index>\[\d+\])?"
    r"(?P<member>(?:\.[a-z_][a-z0-9_]*)+)?(?=[\s:,;]|$)"
)


@dataclass(frozen=True)
class ErrorContext:
    """What the translation needs from the settings."""

    gateway_addr: str
    retry_after_seconds: int


class CallFailed(Exception):
    """A gateway call's failure, with the field names of the route that made it."""

    def __init__(self, error: GenserveClientError, names: FieldNames) -> None:
        super().__init__(str(error))
        self.error = error
        self.names = names


@contextlib.contextmanager
def naming(names: FieldNames) -> Iterator[None]:
    """Report a gateway call's failure inside the block with `names`' parameters."""
    try:
        yield
    except GenserveClientError as error:
        raise CallFailed(error, names) from None


Item = TypeVar("Item")


async def named_stream(stream: AsyncIterator[Item], names: FieldNames) -> AsyncGenerator[Item, None]:
    """The stream's items; its failure reported in the route's field names. Closing this closes
    the stream, which cancels its gRPC call."""
    try:
        with naming(names):
            async for item in stream:
                yield item
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


def _named(message: str, names: FieldNames) -> tuple[str, str | None]:
    """The message with its leading gRPC field path in the route's words, and that parameter."""
    match = LEADING_FIELD.match(message)
    if match is None:
        return message, None
    name, index, member = match.group("name"), match.group("index") or "", match.group("member") or ""
    if name + index + member in names.aliases:  # "start.image[0]" → "start": a point's one image
        param = names.aliases[name + index + member]
    elif member and name + member in names.aliases:  # "styles[1].weight" → "style_weights[1]"
        param = names.aliases[name + member] + index
    elif name in names.aliases:
        param = names.aliases[name] + index + member
    else:
        return message, None
    return param + message[match.end() :], param


def from_client_error(error: GenserveClientError, names: FieldNames, context: ErrorContext) -> ApiError:
    """A gRPC failure as the HTTP client will see it."""
    status = STATUS_BY_GRPC.get(error.code, 500)
    message, param = _named(error.message, names)
    code = error.code.lower()
    headers: dict[str, str] = {}
    not_found, not_found_code = names.not_found_param(message) if status == 404 else (None, None)
    if not_found is not None:
        param, code = not_found, not_found_code or code
    elif status == 429:
        headers["Retry-After"] = str(context.retry_after_seconds)
    elif status == 503 and "service" not in message and "gateway" not in message:
        # The gateway and the services name themselves ("the text service at … is unavailable");
        # a message that names neither came from the channel to the gateway ("failed to connect
        # to all addresses …").
        message = f"the gateway at {context.gateway_addr} is unavailable ({message}); retry shortly"
    return ApiError(status, message, param=param, code=code, headers=headers)


# Where a request part, or a member of a union (str | list[str]), shows in a validation error's location.
_LOCATION_TAGS = {"body", "query", "path", "header", "str", "int", "float", "bool", "list", "dict", "none"}


def _param_of(location: Any) -> str | None:
    """("body", "prompt", "list[str]", 0) → "prompt[0]"."""
    param: str | None = None
    for part in location:
        if isinstance(part, int):
            param = f"{param or ''}[{part}]"
        elif part not in _LOCATION_TAGS and "[" not in str(part):
            param = str(part) if param is None else f"{param}.{part}"
    return param


def _validation_error(error: RequestValidationError) -> ApiError:
    """FastAPI's first complaint about the request, as a 400 naming the field."""
    problems = error.errors()
    if not problems:
        return ApiError(400, "the request is not valid", code="invalid_request")
    # The most specific complaint: for ["a", 3] against str | list[str], the list member's "stop[1]".
    first = max(problems, key=lambda problem: len(problem.get("loc", ())))
    kind = str(first.get("type", ""))
    param = _param_of(first.get("loc", ()))
    if kind == "json_invalid":
        return ApiError(400, f"the body is not valid JSON: {first.get('msg', '')}", code="invalid_json")
    if kind == "missing" and param is None:
        return ApiError(400, "the request needs a JSON body", code="invalid_request")
    if kind == "extra_forbidden":
        return ApiError(400, f"unrecognized request argument: {param}", param=param, code="unknown_parameter")
    return ApiError(400, f"{param}: {first.get('msg', 'invalid value')}", param=param, code="invalid_type")


def install_error_handlers(app: FastAPI, context: ErrorContext) -> None:
    """Every failure a route or FastAPI raises becomes the one error shape."""

    async def api_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return error.response()

    async def call_failed(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, CallFailed)
        return from_client_error(error.error, error.names, context).response()

    async def client_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, GenserveClientError)
        return from_client_error(error, NO_FIELDS, context).response()

    async def invalid_request(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return _validation_error(error).response()

    async def http_exception(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            message = f"no route {request.method} {request.url.path}; the routes are listed at /openapi.json"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(error.detail)
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(error.status_code)
        return ApiError(error.status_code, message, code=code, headers=error.headers).response()

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return ApiError(500, "internal error", code="internal").response()

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(CallFailed, call_failed)
    app.add_exception_handler(GenserveClientError, client_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_exception)
    app.add_exception_handler(Exception, unexpected)
