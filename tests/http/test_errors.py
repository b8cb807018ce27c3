"""The one status table: every gRPC status has its HTTP status and error type, and messages come
back in the route's parameter names."""

from __future__ import annotations

import grpc
import pytest

from genserve.client import GenserveClientError
from genserve.client.errors import error_from
from genserve.http.completion_schema import COMPLETION_FIELDS
from genserve.http.errors import NO_FIELDS, STATUS_BY_GRPC, ApiError, ErrorContext, FieldNames, from_client_error
from genserve.http.media import negotiate

CONTEXT = ErrorContext(gateway_addr="gw.example:50051", retry_after_seconds=3)
EXPECTED = {
    "OK": None,
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "OUT_OF_RANGE": (400, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "NOT_FOUND": (404, "not_found_error"),
    "ALREADY_EXISTS": (409, "conflict_error"),
    "ABORTED": (409, "conflict_error"),
    "FAILED_PRECONDITION": (409, "conflict_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "CANCELLED": (499, "cancelled_error"),
    "INTERNAL": (500, "server_error"),
    "UNKNOWN": (500, "server_error"),
    "DATA_LOSS": (500, "server_error"),
    "UNIMPLEMENTED": (501, "server_error"),
    "UNAVAILABLE": (503, "service_unavailable_error"),
    "DEADLINE_EXCEEDED": (504, "timeout_error"),
}


class FailedCall(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_every_grpc_status_has_an_http_status_and_type() -> None:
    assert set(EXPECTED) == {code.name for code in grpc.StatusCode}
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        error = from_client_error(error_from(FailedCall(code, "what went wrong")), NO_FIELDS, CONTEXT)
        assert (error.status, error.type) == EXPECTED[code.name], code
        assert error.code == code.name.lower() and "what went wrong" in error.message
    assert set(STATUS_BY_GRPC) == set(EXPECTED) - {"OK"}


@pytest.mark.parametrize(
    ("message", "param", "shown"),
    [
        ("sampling.top_p must be in (0, 1], got 0", "top_p", "top_p must be in (0, 1], got 0"),
        ("top_logprobs must be in [0, 10], got 11", "logprobs", "logprobs must be in [0, 10], got 11"),
        ("stop[1] must have 1 to 64 characters, got 0", "stop[1]", "stop[1] must have 1 to 64 characters, got 0"),
        ("temperatures[2] must be in [0, 5]", "temperatures[2]", "temperatures[2] must be in [0, 5]"),
        ("n × temperatures = 4 × 5 = 20 completions", "n", "n × temperatures = 4 × 5 = 20 completions"),
        ("seed cannot be -1: Value out of range", "seed", "seed cannot be -1: Value out of range"),
        ("the gateway refused it", None, "the gateway refused it"),
    ],
)
def test_messages_name_the_parameter_as_the_route_does(message: str, param: str | None, shown: str) -> None:
    error = from_client_error(GenserveClientError(message, "INVALID_ARGUMENT"), COMPLETION_FIELDS, CONTEXT)
    assert (error.status, error.param, error.message) == (400, param, shown)


def test_a_prompt_of_a_list_is_named_by_its_position() -> None:
    names = COMPLETION_FIELDS.with_alias("prompt", "prompt[2]")
    error = from_client_error(GenserveClientError("prompt must not be empty", "INVALID_ARGUMENT"), names, CONTEXT)
    assert error.param == "prompt[2]" and error.message == "prompt[2] must not be empty"


def test_not_found_names_the_model_and_429_says_when_to_retry() -> None:
    missing = from_client_error(GenserveClientError("unknown text model 'x'", "NOT_FOUND"), COMPLETION_FIELDS, CONTEXT)
    assert (missing.param, missing.code) == ("model", "model_not_found")
    busy = from_client_error(GenserveClientError("busy; retry later", "RESOURCE_EXHAUSTED"), NO_FIELDS, CONTEXT)
    assert busy.status == 429 and busy.headers == {"Retry-After": "3"}
    assert busy.body() == {
        "error": {
            "message": "busy; retry later",
            "type": "rate_limit_error",
            "param": None,
            "code": "resource_exhausted",
        }
    }


def test_unavailable_names_the_backend_or_the_gateway() -> None:
    backend = "the text service at 127.0.0.1:50061 is unavailable (connection refused); it may be starting or down"
    assert from_client_error(GenserveClientError(backend, "UNAVAILABLE"), NO_FIELDS, CONTEXT).message == backend
    decoder = "the text decoder stopped; the service is restarting, retry shortly"
    assert from_client_error(GenserveClientError(decoder, "UNAVAILABLE"), NO_FIELDS, CONTEXT).message == decoder
    channel = from_client_error(
        GenserveClientError("failed to connect to all addresses", "UNAVAILABLE"), NO_FIELDS, CONTEXT
    )
    assert channel.message.startswith("the gateway at gw.example:50051 is unavailable (failed to connect")


def test_an_indexed_member_is_named_by_the_route_and_not_found_by_its_subject() -> None:
    names = FieldNames(
        {"styles.image": "style", "styles.weight": "style_weights", "start.image[0]": "start", "start.vector": "start"},
        not_found_cases=(("latent model", "model", "model_not_found"), ("concept", "name", "concept_not_found")),
    )
    cases = {
        "styles[1].image is not a readable image": ("style[1]", "style[1] is not a readable image"),
        "styles[0].weight must be >= 0, got -1": ("style_weights[0]", "style_weights[0] must be >= 0, got -1"),
        "start.image[0] is truncated": ("start", "start is truncated"),
        "start.vector[3] must be finite, got nan": ("start[3]", "start[3] must be finite, got nan"),
        "start.vector has 3 components": ("start", "start has 3 components"),
    }
    for message, (param, shown) in cases.items():
        error = from_client_error(GenserveClientError(message, "INVALID_ARGUMENT"), names, CONTEXT)
        assert (error.param, error.message) == (param, shown), message
    model = from_client_error(GenserveClientError("latent model 'x' is not loaded", "NOT_FOUND"), names, CONTEXT)
    concept = from_client_error(GenserveClientError("you have no concept 'y'", "NOT_FOUND"), names, CONTEXT)
    other = from_client_error(GenserveClientError("no such thing", "NOT_FOUND"), names, CONTEXT)
    assert (model.param, model.code) == ("model", "model_not_found")
    assert (concept.param, concept.code) == ("name", "concept_not_found")
    assert (other.param, other.code) == (None, "not_found")


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "image/png"),
        ("*/*", "image/png"),
        ("text/event-stream", "text/event-stream"),
        ("application/json, */*;q=0.1", "application/json"),
        ("image/*;q=0.5, application/json;q=0.9", "application/json"),
        ("text/*", "text/event-stream"),
        ("image/png;q=0, */*", "application/json"),
    ],
)
def test_accept_chooses_the_answer(accept: str | None, chosen: str) -> None:
    assert negotiate(accept, ("image/png", "application/json", "text/event-stream")) == chosen


def test_an_unacceptable_accept_is_406() -> None:
    with pytest.raises(ApiError) as refused:
        negotiate("text/html", ("image/png", "application/json"))
    assert refused.value.status == 406 and refused.value.param == "Accept"
