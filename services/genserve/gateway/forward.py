"""Forwarding public RPCs to the backend that serves them, without re-encoding messages.

A forwarded call passes the serialized request and responses through as bytes (the gateway
holds no model and needs no fields), carries the caller's principal, the deadline (the client's,
or the default, capped at the maximum) and cancellation on to the backend, and turns transport
failures into UNAVAILABLE naming the backend. Statuses a backend sets itself pass through as is.

A backend address may name several replicas: a comma-separated list (`127.0.0.1:50061,127.0.0.1:50071`)
or a name that resolves to all of them (`dns:///text-headless.genserve.svc.cluster.local:50061`
behind a headless Service), spread by gRPC's round_robin policy with health checks
(genserve.common.balancing, which the http role's channel to the gateways uses too).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from genserve.common.balancing import BALANCING_OPTIONS, SERVICE_CONFIG, channel_target
from genserve.common.caller import forwarded_principal
from genserve.common.config import GatewaySettings, ServerSettings
from genserve.common.errors import RemoteError
from genserve.common.metrics import Metrics
from genserve.common.server import channel_options
from genserve.v1 import models_pb2, models_pb2_grpc

log = logging.getLogger(__name__)

__all__ = ["BALANCING_OPTIONS", "SERVICE_CONFIG", "Backend", "CallPolicy", "channel_target", "forwarding_handler"]


class Backend:
    """One backend service: its address (one replica or several) and a shared, balancing channel."""

    def __init__(self, name: str, address: str, server_settings: ServerSettings) -> None:
        self.name = name
        self.address = address
        options = [*channel_options(server_settings), *BALANCING_OPTIONS]
        self.channel = grpc.aio.insecure_channel(channel_target(address), options=options)
        self.catalog = models_pb2_grpc.ModelServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def list_models(self, family: str, deadline_seconds: float) -> list[models_pb2.ModelInfo]:
        request = models_pb2.ListModelsRequest(family=family)
        response = await self.catalog.ListModels(request, timeout=deadline_seconds, metadata=forwarded_principal())
        return list(response.models)


class Endpoint(Protocol):
    """What a status message names of a backend, a genserve service or a TorchServe endpoint."""

    name: str
    address: str


class CallPolicy:
    """Deadline and metadata of calls from the gateway to a backend."""

    def __init__(self, settings: GatewaySettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics

    def timeout(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return self.settings.default_deadline_seconds
        return max(0.0, min(remaining, self.settings.max_deadline_seconds))

    def error(self, backend: Endpoint, error: grpc.aio.AioRpcError) -> RemoteError:
        code = error.code()
        details = error.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            self.metrics.backend_errors.labels(backend.name, code.name).inc()
            log.warning("%s backend at %s unavailable: %s", backend.name, backend.address, details)
            return RemoteError(
                code,
                f"the {backend.name} service at {backend.address} is unavailable ({details}); "
                "it may be starting or down, retry shortly",
            )
        return RemoteError(code, details)


def forwarding_handler(service: ServiceDescriptor, backend: Backend, policy: CallPolicy) -> grpc.GenericRpcHandler:
    """A generic handler that forwards every method of `service` to `backend`."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        path = f"/{service.full_name}/{method.name}"
        if method.client_streaming:
            raise ValueError(f"{path}: client-streaming methods are not forwarded")
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(_stream(path, backend, policy))
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(_unary(path, backend, policy))
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _unary(path: str, backend: Backend, policy: CallPolicy) -> Any:
    call_backend = backend.channel.unary_unary(path)  # bytes in, bytes out

    async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return await call_backend(request, timeout=policy.timeout(context), metadata=forwarded_principal())
        except grpc.aio.AioRpcError as error:
            raise policy.error(backend, error) from None

    return forward


def _stream(path: str, backend: Backend, policy: CallPolicy) -> Any:
    call_backend = backend.channel.unary_stream(path)

    async def forward(request: bytes, context: grpc.aio.ServicerContext) -> None:
        # context.write rather than yield: every message of every stream passes here, and a
        # coroutine spares the generator layers (the interceptors wrap it the same way).
        call = call_backend(request, timeout=policy.timeout(context), metadata=forwarded_principal())
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    break
                await context.write(message)
        except grpc.aio.AioRpcError as error:
            raise policy.error(backend, error) from None
        finally:
            call.cancel()  # a no-op after EOF; stops the backend's work when the client left

    return forward
