"""The server interceptor every process installs: error mapping and request metrics.

A `GenserveError` raised by a servicer becomes its status code and message; a client
cancellation or passed deadline is recorded as CANCELLED / DEADLINE_EXCEEDED; any other
exception becomes INTERNAL "internal error" and its traceback goes to the log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from genserve.common.errors import GenserveError
from genserve.common.metrics import Metrics

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error"


def split_method(full_method: str) -> tuple[str, str]:
    """'/genserve.v1.TextService/Generate' → ('genserve.v1.TextService', 'Generate')."""
    _, service, method = full_method.split("/", 2)
    return service, method


def _code_of_cancellation(context: grpc.aio.ServicerContext) -> str:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED.name
    return grpc.StatusCode.CANCELLED.name


def _code_set_on(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if code is None or code == 0:
        return grpc.StatusCode.OK.name
    if isinstance(code, grpc.StatusCode):
        return code.name
    return grpc.StatusCode.UNKNOWN.name


class _Call:
    """Book-keeping of one RPC: in-flight gauge, duration, final code."""

    def __init__(self, metrics: Metrics, service: str, method: str) -> None:
        self.metrics = metrics
        self.service = service
        self.method = method
        self.code = grpc.StatusCode.OK.name
        self.started = time.perf_counter()

    def __enter__(self) -> _Call:
        self.metrics.in_flight.labels(self.service, self.method).inc()
        return self

    def __exit__(self, *exc: object) -> None:
        self.metrics.in_flight.labels(self.service, self.method).dec()
        self.metrics.requests.labels(self.service, self.method, self.code).inc()
        self.metrics.request_seconds.labels(self.service, self.method).observe(time.perf_counter() - self.started)

    async def fail(self, context: grpc.aio.ServicerContext, error: BaseException) -> None:
        """Record and re-raise `error` as the right status (never returns)."""
        if isinstance(error, GenserveError):
            self.code = error.code.name
            await context.abort(error.code, error.message)
        if isinstance(error, grpc.aio.AbortError):
            self.code = _code_set_on(context)
            raise error
        if isinstance(error, asyncio.CancelledError):
            self.code = _code_of_cancellation(context)
            raise error
        self.code = grpc.StatusCode.INTERNAL.name
        log.error(
            "unhandled error in %s/%s",
            self.service,
            self.method,
            exc_info=(type(error), error, error.__traceback__),
        )
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


Around = Callable[[grpc.aio.ServicerContext], contextlib.AbstractAsyncContextManager[None]]


def wrap_behavior(behavior: Any, streaming: bool, around: Around) -> Any:
    """`behavior` run inside `around(context)`. Streaming behaviours may be async generators
    (yield responses) or coroutines (await context.write, one fewer generator per message)."""
    if not streaming:

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(context):
                return await behavior(request, context)

        return unary
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with around(context):
                async for item in behavior(request, context):
                    yield item

        return stream

    async def writer(request: Any, context: grpc.aio.ServicerContext) -> None:
        async with around(context):
            await behavior(request, context)

    return writer


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Runs every unary-unary and unary-stream method outside grpc.* (health and reflection
    stay untouched) inside `around(service, method, context)`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith("/grpc.") or handler.request_streaming:
            return handler  # no client-streaming RPCs in this API
        service, method = split_method(handler_call_details.method)

        def around(context: grpc.aio.ServicerContext) -> contextlib.AbstractAsyncContextManager[None]:
            return self.around(service, method, context)

        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                wrap_behavior(handler.unary_stream, True, around),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            wrap_behavior(handler.unary_unary, False, around),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def around(
        self, service: str, method: str, context: grpc.aio.ServicerContext
    ) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError


class ServerInterceptor(WrappingInterceptor):
    """Maps errors to statuses and records request metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    @contextlib.asynccontextmanager
    async def around(self, service: str, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        with _Call(self.metrics, service, method) as call:
            try:
                yield
            except GeneratorExit:  # the client went away in the middle of a stream
                call.code = _code_of_cancellation(context)
                raise
            except BaseException as error:
                await call.fail(context, error)
            call.code = _code_set_on(context)
