"""Every out-of-range parameter gets INVALID_ARGUMENT or NOT_FOUND naming the field, unary and
streamed, and a stream never hangs on a bad request."""

from __future__ import annotations

import grpc
import pytest

from genserve.v1 import text_pb2, text_pb2_grpc

S = text_pb2.SamplingParams
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND

CASES = [
    (
        "temperature below 0",
        dict(sampling=S(temperature=-0.1)),
        INVALID,
        "sampling.temperature must be in [0, 5]",
    ),
    ("temperature NaN", dict(sampling=S(temperature=float("nan"))), INVALID, "sampling.temperature"),
    (
        "temperature too high",
        dict(sampling=S(temperature=9)),
        INVALID,
        "sampling.temperature must be in [0, 5]",
    ),
    ("top_p zero", dict(sampling=S(top_p=0.0)), INVALID, "sampling.top_p must be in (0, 1]"),
    ("top_p above one", dict(sampling=S(top_p=1.5)), INVALID, "sampling.top_p must be in (0, 1]"),
    ("top_p NaN", dict(sampling=S(top_p=float("nan"))), INVALID, "sampling.top_p"),
    ("top_k negative", dict(sampling=S(top_k=-1)), INVALID, "sampling.top_k must be in [0,"),
    ("top_k above vocabulary", dict(sampling=S(top_k=100000)), INVALID, "sampling.top_k"),
    ("min_p one", dict(sampling=S(min_p=1.0)), INVALID, "sampling.min_p must be in [0, 1)"),
    (
        "repetition penalty zero",
        dict(sampling=S(repetition_penalty=0.0)),
        INVALID,
        "sampling.repetition_penalty must be in (0, 10]",
    ),
    (
        "presence penalty",
        dict(sampling=S(presence_penalty=3)),
        INVALID,
        "sampling.presence_penalty must be in [-2, 2]",
    ),
    (
        "frequency penalty",
        dict(sampling=S(frequency_penalty=-3)),
        INVALID,
        "sampling.frequency_penalty must be in [-2, 2]",
    ),
    ("max_tokens above cap", dict(max_tokens=5000), INVALID, "max_tokens must be in [1, 2048]"),
    ("max_tokens negative", dict(max_tokens=-1), INVALID, "max_tokens must be in [1, 2048]"),
    (
        "unknown model",
        dict(model="no-such-model"),
        NOT_FOUND,
        "unknown text model 'no-such-model'; available:",
    ),
    ("empty prompt", dict(prompt=""), INVALID, "prompt must not be empty"),
    ("oversize prompt", dict(prompt="a" * 2001), INVALID, "prompt has 2001 characters; at most 2000"),
    ("characters outside the vocabulary", dict(prompt="café ☕"), INVALID, "outside the vocabulary"),
    ("too many completions", dict(n=40, temperatures=[0.5, 1.0]), INVALID, "at most 64 per request"),
    ("negative n", dict(n=-2), INVALID, "n must be >= 0"),
    ("temperature in a sweep", dict(temperatures=[0.5, 6.0]), INVALID, "temperatures[1] must be in [0, 5]"),
    ("too many stops", dict(stop=["a"] * 9), INVALID, "at most 8"),
    ("empty stop", dict(stop=[""]), INVALID, "stop[0] must have 1 to 64 characters"),
    (
        "top_logprobs too many",
        dict(logprobs=True, top_logprobs=11),
        INVALID,
        "top_logprobs must be in [0, 10]",
    ),
    ("top_logprobs without logprobs", dict(top_logprobs=2), INVALID, "top_logprobs needs logprobs=true"),
]


@pytest.fixture(scope="module")
def stub(gateway_channel: grpc.Channel) -> text_pb2_grpc.TextServiceStub:
    return text_pb2_grpc.TextServiceStub(gateway_channel)


def make_request(fields: dict[str, object]) -> text_pb2.GenerateRequest:
    fields = dict(fields)
    fields.setdefault("prompt", "ROMEO:")
    return text_pb2.GenerateRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize(("name", "fields", "code", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(
    stub: text_pb2_grpc.TextServiceStub,
    streamed: bool,
    name: str,
    fields: dict[str, object],
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        if streamed:
            list(stub.GenerateStream(make_request(fields), timeout=10))
        else:
            stub.Generate(make_request(fields), timeout=10)
    assert info.value.code() == code
    assert message in info.value.details()
    assert "Traceback" not in info.value.details()
