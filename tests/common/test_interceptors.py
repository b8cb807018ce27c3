"""The one error table, checked over a real socket for every error class, plus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from prometheus_client import CollectorRegistry

from genserve.common.errors import ALL_ERRORS, GenserveError
from genserve.common.interceptors import INTERNAL_MESSAGE, ServerInterceptor
from genserve.common.metrics import Metrics

SERVICE = "test.Errors"


def _raise(name: str) -> None:
    if name == "crash":
        raise ZeroDivisionError("secret internals")
    error_class = next(e for e in ALL_ERRORS if e.__name__ == name)
    raise error_class(f"{name} happened; allowed: x")


async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    _raise(request.decode())
    return b""


async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    _raise(request.decode())


async def exercise(
    names: list[str],
) -> tuple[dict[str, tuple[grpc.StatusCode, str]], dict[str, tuple[grpc.StatusCode, str]], Metrics]:
    metrics = Metrics(CollectorRegistry())
    server = grpc.aio.server(interceptors=[ServerInterceptor(metrics)])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(unary),
                    "Stream": grpc.unary_stream_rpc_method_handler(stream),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    unary_results, stream_results = {}, {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call_unary = channel.unary_unary(f"/{SERVICE}/Unary")
            call_stream = channel.unary_stream(f"/{SERVICE}/Stream")
            for name in names:
                try:
                    await call_unary(name.encode(), timeout=5)
                except grpc.aio.AioRpcError as error:
                    unary_results[name] = (error.code(), error.details())
                received = []
                try:
                    async for message in call_stream(name.encode(), timeout=5):
                        received.append(message)
                except grpc.aio.AioRpcError as error:
                    stream_results[name] = (error.code(), error.details())
                assert received == [b"first"]
    finally:
        await server.stop(None)
    return unary_results, stream_results, metrics


def test_every_error_class_maps_to_its_status_over_the_wire() -> None:
    names = [e.__name__ for e in ALL_ERRORS]
    unary_results, stream_results, metrics = asyncio.run(exercise([*names, "crash"]))
    for error_class in ALL_ERRORS:
        expected = (error_class.code, f"{error_class.__name__} happened; allowed: x")
        assert unary_results[error_class.__name__] == expected
        assert stream_results[error_class.__name__] == expected
        count = metrics.requests.labels(SERVICE, "Unary", error_class.code.name)._value.get()
        assert count >= 1
    # anything else: INTERNAL with a generic message, never the exception text
    assert unary_results["crash"] == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    assert stream_results["crash"] == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def test_error_classes_have_distinct_codes() -> None:
    codes = [e.code for e in ALL_ERRORS]
    assert len(set(codes)) == len(codes)
    assert all(issubclass(e, GenserveError) for e in ALL_ERRORS)
