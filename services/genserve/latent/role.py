"""The latent role: loads the VAEs and GANs, then serves LatentService and ModelService."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from genserve.common.catalog import ModelServiceRole, model_info
from genserve.common.config import ImageSettings, LatentSettings, ModelSettings
from genserve.common.devices import configure_torch, pick_device
from genserve.common.images import ImageLimits
from genserve.common.metrics import Metrics
from genserve.common.model_store import ModelStore
from genserve.common.redis_clients import async_client
from genserve.latent.concepts import UserConcepts, concepts_path, load_builtin
from genserve.latent.operations import LatentModel, LatentOperations
from genserve.latent.servicer import LatentServicer
from genserve.v1 import latent_pb2, latent_pb2_grpc, models_pb2

log = logging.getLogger(__name__)


class LatentRole(ModelServiceRole):
    name = "latent"
    api = latent_pb2.DESCRIPTOR.services_by_name["LatentService"]

    def __init__(
        self, models: ModelSettings, latent: LatentSettings, images: ImageSettings, redis_url: str, metrics: Metrics
    ) -> None:
        self.model_settings = models
        self.settings = latent
        self.image_settings = images
        self.redis_url = redis_url
        self.metrics = metrics
        self.store = ModelStore(models.model_store)
        self.operations: LatentOperations | None = None
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="latent-torch", initializer=configure_torch,
            initargs=(models.torch_threads,),
        )  # fmt: skip

    def add_api(self, server: grpc.aio.Server) -> None:
        latent_pb2_grpc.add_LatentServiceServicer_to_server(LatentServicer(lambda: self.operations), server)

    def describe(self) -> list[models_pb2.ModelInfo] | None:
        if self.operations is None:
            return None
        return [
            model_info(
                m.entry,
                str(m.device),
                name == self.operations.default,
                {"latent_dim": str(m.latent_dim), "concepts": ",".join(sorted(m.builtin))},
            )
            for name, m in sorted(self.operations.models.items())
        ]

    async def start(self) -> None:
        from genserve.latent.models import load_model

        selection = self.store.select("latent", self.settings.models, self.settings.default_model)

        def load() -> dict[str, LatentModel]:
            device = pick_device(self.model_settings.device)
            loaded = {}
            for entry in selection.entries:
                path = self.store.verified_path(entry)
                # float64: a GEMM's float32 rounding depends on the batch's size, which would let one image's
                # pixels depend on the requests it shared a pass with; in float64 the difference never reaches
                # an 8-bit level. It costs speed (about 2.5x per image in a pass of 64 on CPU): the price of
                # a seed giving the same pixels in any batch.
                network = load_model(path, device).double()
                loaded[entry.name] = LatentModel(
                    entry.name, entry, network, device, load_builtin(concepts_path(path), entry.name)
                )
            return loaded

        models = await asyncio.wrap_future(self.executor.submit(load))
        default = selection.default
        client = async_client(self.redis_url) if self.redis_url else None
        if client is None:
            log.warning("REDIS_URL is not set: user concepts are kept in memory and lost on restart")
        limits = ImageLimits(self.image_settings.max_image_pixels, self.image_settings.max_image_bytes)
        for name in models:
            self.metrics.init_latent_model(name)
        self.operations = LatentOperations(
            self.settings,
            limits,
            models,
            default,
            self.executor,
            UserConcepts(client, self.settings.max_concepts),
            on_batch=self.metrics.observe_latent_batch,
        )
        log.info("latent: loaded %s (default %s)", ", ".join(sorted(models)), default)

    async def stop(self) -> None:
        if self.operations is not None:
            await self.operations.batcher.close()
            if self.operations.concepts.client is not None:
                await self.operations.concepts.client.aclose()
        self.executor.shutdown(wait=False, cancel_futures=True)
