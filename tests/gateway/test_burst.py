"""A burst of thousands of concurrent calls from one client, at the gateway and at a backend
directly: every call ends OK or RESOURCE_EXHAUSTED with a message that says which limit, none
with a bare CANCELLED, and the services' request counters add up to the calls sent."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from genserve.testing import ServerProcess
from genserve.v1 import text_pb2, text_pb2_grpc
from tests.conftest import behind_gateway

CALLS = 3000
MAX_TOKENS = 4
# The limits a burst meets, each named in its RESOURCE_EXHAUSTED message.
LIMIT_MESSAGES = ("is busy:", "the gateway is at its limit of")


def answered(process: ServerProcess, method: str = "Generate") -> dict[str, float]:
    """Calls of TextService `method` this process answered, by status code, from its /metrics."""
    codes: dict[str, float] = {}
    for family in text_string_to_metric_families(process.metrics()):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "genserve_requests_total" and (labels.get("method"), labels.get("service")) == (
                method,
                "genserve.v1.TextService",
            ):
                codes[labels["code"]] = sample.value
    return codes


async def burst(address: str, calls: int) -> list[tuple[grpc.StatusCode, str]]:
    """`calls` unary Generate calls started at once over one channel; (code, message) of each."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = text_pb2_grpc.TextServiceStub(channel)

        async def one(seed: int) -> tuple[grpc.StatusCode, str]:
            request = text_pb2.GenerateRequest(prompt="ROMEO:", max_tokens=MAX_TOKENS, seed=seed)
            try:
                reply = await stub.Generate(request, timeout=240)
            except grpc.aio.AioRpcError as error:
                return error.code(), error.details() or ""
            assert len(reply.completions[0].text) == MAX_TOKENS
            return grpc.StatusCode.OK, ""

        return await asyncio.gather(*(one(seed) for seed in range(calls)))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with behind_gateway("text", tmp_path_factory.mktemp("burst"), {}) as pair:
        yield pair


def check(outcomes: list[tuple[grpc.StatusCode, str]], before: dict[str, float], after: dict[str, float]) -> None:
    tally = collections.Counter(code for code, _ in outcomes)
    assert set(tally) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, tally
    assert tally[grpc.StatusCode.OK] > 0, tally
    refused = [message for code, message in outcomes if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert all(any(limit in message for limit in LIMIT_MESSAGES) for message in refused), set(refused)
    counted = {code: after.get(code, 0.0) - before.get(code, 0.0) for code in after}
    assert sum(counted.values()) == len(outcomes), counted
    assert counted.get("OK", 0.0) == tally[grpc.StatusCode.OK], (counted, tally)


@pytest.mark.parametrize("target", ["backend", "gateway"])
def test_a_burst_ends_in_documented_statuses_and_is_counted(
    stack: tuple[ServerProcess, ServerProcess], target: str
) -> None:
    text, gateway = stack
    called = text if target == "backend" else gateway
    before = answered(called)
    outcomes = asyncio.run(burst(called.address, CALLS))
    check(outcomes, before, answered(called))
    if target == "gateway":
        # Every call the gateway let through reached the backend and was answered there.
        assert sum(answered(text).values()) >= sum(1 for code, _ in outcomes if code == grpc.StatusCode.OK)
