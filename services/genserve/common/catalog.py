"""ModelService on a backend: what it has loaded, described from the model store manifest."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import grpc

from genserve.common.errors import NotFound, Unavailable
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
        models = self.describe()
        if models is None:
            raise Unavailable("models are still loading; retry shortly")
        return models

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
