"""ModelService on the gateway: the union of every backend's models."""

from __future__ import annotations

import asyncio
import logging

import grpc

from genserve.common.errors import GenserveError, NotFound, Unavailable
from genserve.gateway.forward import Backend, CallPolicy
from genserve.gateway.torchserve import TorchServeBackend
from genserve.v1 import models_pb2, models_pb2_grpc

log = logging.getLogger(__name__)


class GatewayCatalogServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, backends: list[Backend | TorchServeBackend], policy: CallPolicy) -> None:
        self.backends = backends
        self.policy = policy

    async def _list(
        self, backend: Backend | TorchServeBackend, request: models_pb2.ListModelsRequest, deadline_seconds: float
    ) -> list[models_pb2.ModelInfo] | None:
        try:
            return await backend.list_models(request.family, deadline_seconds)
        except grpc.aio.AioRpcError as error:  # a genserve service's; a TorchServe backend translates its own
            log.warning("ListModels on %s failed: %s", backend.name, self.policy.error(backend, error).message)
        except GenserveError as error:
            log.warning("ListModels on %s failed: %s", backend.name, error.message)
        return None

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        timeout = self.policy.timeout(context)
        answers = await asyncio.gather(*(self._list(b, request, timeout) for b in self.backends))
        if all(answer is None for answer in answers):
            raise Unavailable(
                "no backend answered ListModels: " + ", ".join(f"{b.name} at {b.address}" for b in self.backends)
            )
        models = [m for answer in answers if answer for m in answer]
        return models_pb2.ListModelsResponse(models=sorted(models, key=lambda m: (m.family, m.name)))

    async def DescribeModel(
        self, request: models_pb2.DescribeModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ModelInfo:
        listing = await self.ListModels(models_pb2.ListModelsRequest(), context)
        for model in listing.models:
            if model.name == request.name:
                return model
        names = ", ".join(m.name for m in listing.models)
        raise NotFound(f"unknown model {request.name!r}; available: {names}")
