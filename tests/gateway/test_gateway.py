"""The public endpoint: authentication, routing, deadlines, backend failures, metrics, reflection."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from genserve.testing import ServerProcess
from genserve.v1 import models_pb2, models_pb2_grpc, text_pb2, text_pb2_grpc
from tests.conftest import TextStack, start_role

REQUEST = text_pb2.GenerateRequest(prompt="ROMEO:", max_tokens=5, seed=1)


@pytest.fixture(scope="module")
def secured(text_stack: TextStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    gateway = start_role(
        "gateway",
        tmp_path_factory.mktemp("secured"),
        {"GENSERVE_TEXT_ADDR": text_stack.text.address, "GENSERVE_API_KEYS": "alice:s3cret, bare-key-123"},
    )
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def orphan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A gateway whose text backend is not running: its port is held by a socket that never listens,
    so connections are refused and no server (the gateway itself included) can take the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        backend = f"127.0.0.1:{held.getsockname()[1]}"
        gateway = start_role("gateway", tmp_path_factory.mktemp("orphan"), {"GENSERVE_TEXT_ADDR": backend})
        yield gateway
        gateway.stop()


def call(address: str, metadata: list[tuple[str, str]] | None = None) -> text_pb2.GenerateResponse:
    with grpc.insecure_channel(address) as channel:
        return text_pb2_grpc.TextServiceStub(channel).Generate(REQUEST, timeout=10, metadata=metadata)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (None, "missing API key"),
        ([("authorization", "Bearer wrong")], "invalid API key"),
        ([("x-api-key", "s3cre")], "invalid API key"),
    ],
)
def test_calls_without_a_valid_key_are_unauthenticated(
    secured: ServerProcess, metadata: list[tuple[str, str]] | None, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(secured.address, metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in info.value.details()


@pytest.mark.parametrize("metadata", [[("authorization", "Bearer s3cret")], [("x-api-key", "bare-key-123")]])
def test_valid_keys_pass(secured: ServerProcess, metadata: list[tuple[str, str]]) -> None:
    assert len(call(secured.address, metadata).completions[0].text) == 5


def test_health_and_reflection_need_no_key(secured: ServerProcess) -> None:
    with grpc.insecure_channel(secured.address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "genserve.v1.TextService" in services


def test_auth_failures_are_counted(secured: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError):
        call(secured.address, [("authorization", "Bearer nope")])
    assert re.search(r'^genserve_auth_failures_total\{reason="invalid"\} [1-9]', secured.metrics(), re.M)


def test_a_backend_that_is_down_gives_unavailable_naming_it(orphan: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(orphan.address)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the text service at 127.0.0.1:" in info.value.details()
    with grpc.insecure_channel(orphan.address) as channel, pytest.raises(grpc.RpcError) as listing:
        models_pb2_grpc.ModelServiceStub(channel).ListModels(models_pb2.ListModelsRequest(), timeout=10)
    assert listing.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_gateway_whose_backend_is_a_gateway_fails_at_once(
    text_stack: TextStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log_dir = tmp_path_factory.mktemp("chained")
    inner = start_role(
        "gateway", log_dir, {"GENSERVE_TEXT_ADDR": text_stack.text.address, "GENSERVE_GATEWAY_MAX_CONCURRENT": "2"}
    )
    outer = start_role("gateway", log_dir, {"GENSERVE_TEXT_ADDR": inner.address})
    try:
        for _ in range(3):  # more than the inner gateway's limit: refused calls must not hold a slot
            with pytest.raises(grpc.RpcError) as info:
                call(outer.address)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "points at a gateway" in info.value.details()
        assert call(inner.address).completions
    finally:
        outer.stop()
        inner.stop()
    forwarded = [("x-genserve-principal", "alice")]  # what a gateway sends to its backends
    assert call(text_stack.text.address, forwarded).completions


def counter(text: str, service: str, method: str, code: str) -> float:
    pattern = rf'^genserve_requests_total\{{code="{code}",method="{method}",service="{service}"\}} (\S+)$'
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def test_request_counters_move_on_gateway_and_backend(text_stack: TextStack) -> None:
    service = "genserve.v1.TextService"
    before = [counter(p.metrics(), service, "Generate", "OK") for p in (text_stack.gateway, text_stack.text)]
    bad_before = counter(text_stack.gateway.metrics(), service, "Generate", "INVALID_ARGUMENT")
    call(text_stack.gateway.address)
    with pytest.raises(grpc.RpcError), grpc.insecure_channel(text_stack.gateway.address) as channel:
        text_pb2_grpc.TextServiceStub(channel).Generate(text_pb2.GenerateRequest(prompt=""), timeout=10)
    after = [counter(p.metrics(), service, "Generate", "OK") for p in (text_stack.gateway, text_stack.text)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1]
    assert counter(text_stack.gateway.metrics(), service, "Generate", "INVALID_ARGUMENT") == bad_before + 1
    assert (
        'genserve_request_seconds_bucket{le="0.5",method="Generate",service="genserve.v1.TextService"}'
        in text_stack.gateway.metrics()
    )


def test_model_listing_is_merged_from_backends(gateway_channel: grpc.Channel) -> None:
    listing = models_pb2_grpc.ModelServiceStub(gateway_channel).ListModels(
        models_pb2.ListModelsRequest(family="text"), timeout=10
    )
    names = [m.name for m in listing.models]
    assert "shakespeare-lstm" in names and "shakespeare-transformer" in names
    assert sum(m.is_default for m in listing.models) == 1
    for model in listing.models:
        assert model.metrics["val_loss_nats_per_char"] > 0
        assert len(model.sha256) == 64
    with pytest.raises(grpc.RpcError) as info:
        models_pb2_grpc.ModelServiceStub(gateway_channel).DescribeModel(
            models_pb2.DescribeModelRequest(name="nope"), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_reflection_client_discovers_and_calls_the_api(text_stack: TextStack) -> None:
    """What grpcurl does: fetch descriptors over reflection, build messages, call the method."""
    with grpc.insecure_channel(text_stack.gateway.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("genserve.v1.TextService")
        method = service.methods_by_name["GenerateStream"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = request_class(prompt="JULIET:", max_tokens=12, seed=4)
        stream = channel.unary_stream(
            "/genserve.v1.TextService/GenerateStream",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        text = "".join(message.text for message in stream(request, timeout=30))
        services = set(database.get_services())
    assert len(text) == 12
    assert services >= {
        "genserve.v1.TextService",
        "genserve.v1.ModelService",
        "grpc.health.v1.Health",
    }


def test_log_has_no_traceback_for_client_errors(text_stack: TextStack) -> None:
    assert "Traceback" not in Path(text_stack.gateway.log_path).read_text()


def test_calls_beyond_the_concurrency_limit_are_refused(text_stack: TextStack, tmp_path: Path) -> None:
    gateway = start_role(
        "gateway", tmp_path, {"GENSERVE_TEXT_ADDR": text_stack.text.address, "GENSERVE_GATEWAY_MAX_CONCURRENT": "1"}
    )
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = text_pb2_grpc.TextServiceStub(channel)
            long_call = stub.GenerateStream(text_pb2.GenerateRequest(prompt="ROMEO:", max_tokens=2048), timeout=60)
            next(long_call)
            with pytest.raises(grpc.RpcError) as info:
                stub.Generate(REQUEST, timeout=10)
            long_call.cancel()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of 1 concurrent calls" in info.value.details()
    finally:
        gateway.stop()
