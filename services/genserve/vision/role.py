"""The vision role: loads the ImageNet backbones, then serves VisionService and ModelService."""

from __future__ import annotations

import asyncio
import logging

import grpc

from genserve.common.catalog import ModelServiceRole, model_info
from genserve.common.config import ImageSettings, ModelSettings, VisionSettings
from genserve.common.devices import pick_device
from genserve.common.metrics import Metrics
from genserve.common.model_store import ModelStore
from genserve.v1 import models_pb2, vision_pb2, vision_pb2_grpc
from genserve.vision.operations import VisionModels, VisionOperations
from genserve.vision.runner import TorchRunner
from genserve.vision.servicer import VisionServicer
from genserve.vision.weights import load_from_store

log = logging.getLogger(__name__)


class VisionRole(ModelServiceRole):
    name = "vision"
    api = vision_pb2.DESCRIPTOR.services_by_name["VisionService"]

    def __init__(self, models: ModelSettings, vision: VisionSettings, images: ImageSettings, metrics: Metrics) -> None:
        self.model_settings = models
        self.vision_settings = vision
        self.image_settings = images
        self.metrics = metrics
        self.operations: VisionOperations | None = None
        self.runner: TorchRunner | None = None
        self.store = ModelStore(models.model_store)

    def add_api(self, server: grpc.aio.Server) -> None:
        vision_pb2_grpc.add_VisionServiceServicer_to_server(VisionServicer(lambda: self.operations), server)

    def describe(self) -> list[models_pb2.ModelInfo] | None:
        if self.operations is None:
            return None
        entries = self.store.entries()
        models = self.operations.models
        return [
            model_info(
                entries[name], models.devices[name], name == models.default_backbone, layers=backbone.layer_names
            )
            for name, backbone in sorted(models.backbones.items())
        ]

    async def start(self) -> None:
        settings = self.vision_settings
        self.runner = TorchRunner(
            "vision", settings.concurrency, settings.max_waiting, self.model_settings.torch_threads, self.metrics
        )

        selection = self.store.select("vision", settings.models, settings.default_model)

        def load() -> VisionModels:
            device = pick_device(self.model_settings.device)
            backbones = {entry.name: load_from_store(self.store, entry.name, device) for entry in selection.entries}
            return VisionModels(backbones, selection.default, {name: str(device) for name in backbones})

        # Loading is torch work: on the runner's thread, like every other torch call here.
        models = await asyncio.wrap_future(self.runner.executor.submit(load))
        self.operations = VisionOperations(settings, self.image_settings, models, self.runner)
        log.info("vision: loaded %s", ", ".join(f"{n} on {d}" for n, d in models.devices.items()))

    async def stop(self) -> None:
        if self.runner is not None:
            self.runner.shutdown()
