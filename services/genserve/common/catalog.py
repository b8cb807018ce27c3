"""ModelService on a backend: what it has loaded, described from the model store manifest."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from genserve.common.errors import NotFound, loaded
from genserve.common.model_store import ModelEntry
from genserve.v1 import models_pb2, models_pb2_grpc


def model_info(
    entry: ModelEntry,
    device: str,
    is_default: bool,
    details: Mapping[str, str] | None = None,
    layers: Sequence[str] = (),
) -> models_pb2.ModelInfo:
    metrics = {k: float(v) for k, v in entry.metrics.items() if isinstance(v, int | float)}
    merged = {k: str(v) for k, v in entry.details.items()}
    merged.update(details or {})
    return models_pb2.ModelInfo(
        name=entry.name,
        version=entry.version,
        family=entry.family,
        architecture=entry.architecture,
        parameter_count=entry.parameter_count,
        device=device,
        is_default=is_default,
        metrics=metrics,
        data_source=entry.data_source,
        command=entry.command,
        layers=list(layers),
        details=merged,
        sha256=entry.sha256,
    )


class CatalogServicer(models_pb2_grpc.ModelServiceServicer):
    """Serves `describe()`, a callable that lists this backend's loaded models (None while loading)."""

    def __init__(self, describe: Callable[[], list[models_pb2.ModelInfo] | None]) -> None:
        self.describe = describe

    def _models(self) -> list[models_pb2.ModelInfo]:
        return loaded(self.describe(), "models")

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        models = [m for m in self._models() if not request.family or m.family == request.family]
        return models_pb2.ListModelsResponse(models=models)

    async def DescribeModel(
        self, request: models_pb2.DescribeModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ModelInfo:
        models = self._models()
        for model in models:
            if model.name == request.name:
                return model
        raise NotFound(f"unknown model {request.name!r}; available: {', '.join(m.name for m in models)}")


MODEL_SERVICE = models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


class ModelServiceRole:
    """What the model services' roles share: their family's API plus ModelService, which lists the
    models `describe()` returns (None while loading), and no interceptors of their own.

    A subclass names its API (`api`, the service descriptor), registers its servicer in
    `add_api`, and implements describe/start/stop.
    """

    name: str
    api: ServiceDescriptor
    failure: str | None = None

    def service_names(self) -> list[str]:
        return [self.api.full_name, MODEL_SERVICE]

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return []

    def add_to_server(self, server: grpc.aio.Server) -> None:
        self.add_api(server)
        models_pb2_grpc.add_ModelServiceServicer_to_server(CatalogServicer(self.describe), server)

    def add_api(self, server: grpc.aio.Server) -> None:
        raise NotImplementedError

    def describe(self) -> list[models_pb2.ModelInfo] | None:
        raise NotImplementedError
