"""The gateway role: the only public endpoint. Authenticates, limits, and routes to backends."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from redis.exceptions import RedisError

from genserve.common.config import GatewaySettings, ImageSettings, JobSettings, ModelSettings, ServerSettings
from genserve.common.errors import Unavailable
from genserve.common.metrics import Metrics
from genserve.common.model_store import ModelEntry, ModelStore, ModelStoreError
from genserve.common.redis_clients import async_client
from genserve.gateway import torchserve
from genserve.gateway.auth import Gatekeeper, KeyRing
from genserve.gateway.catalog import GatewayCatalogServicer
from genserve.gateway.forward import Backend, CallPolicy, forwarding_handler
from genserve.jobs.queue import JobQueue
from genserve.jobs.servicer import JobServicer
from genserve.v1 import jobs_pb2, jobs_pb2_grpc, latent_pb2, models_pb2, models_pb2_grpc, text_pb2, vision_pb2

log = logging.getLogger(__name__)
GAUGE_SECONDS = 2.0  # how often the job gauges are sampled from Redis


class GatewayRole:
    name = "gateway"
    failure: str | None = None

    def __init__(
        self,
        server: ServerSettings,
        gateway: GatewaySettings,
        metrics: Metrics,
        jobs: JobSettings | None = None,
        images: ImageSettings | None = None,
        redis_url: str = "",
        models: ModelSettings | None = None,
    ) -> None:
        self.server_settings = server
        self.settings = gateway
        self.metrics = metrics
        self.job_settings = jobs or JobSettings()
        self.image_settings = images or ImageSettings()
        self.redis_url = redis_url
        self.queue: JobQueue | None = None
        self.sampler: asyncio.Task[None] | None = None
        self.policy = CallPolicy(gateway, metrics)
        # (public service, backend name, backend address)
        self.routes = [
            (text_pb2.DESCRIPTOR.services_by_name["TextService"], "text", gateway.text_addr),
            (vision_pb2.DESCRIPTOR.services_by_name["VisionService"], "vision", gateway.vision_addr),
            (latent_pb2.DESCRIPTOR.services_by_name["LatentService"], "latent", gateway.latent_addr),
        ]
        self.torchserve_models = {name: torchserve.torchserve_models(gateway, name) for _, name, _ in self.routes}
        self.model_settings = models or ModelSettings()
        self.entries: dict[str, ModelEntry] | None = None
        self.torchserve_token = torchserve.TorchServeToken(gateway.torchserve_token, gateway.torchserve_token_file)
        self.backends: list[Backend | torchserve.TorchServeBackend] = []
        self.gatekeeper = Gatekeeper(
            KeyRing(gateway.api_keys, gateway.api_keys_file), gateway.max_concurrent_calls, metrics
        )

    def service_names(self) -> list[str]:
        return [
            *(service.full_name for service, _, _ in self.routes),
            models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
            jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
        ]

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [self.gatekeeper]

    def add_to_server(self, server: grpc.aio.Server) -> None:
        # Channels belong to the running event loop, so they are made here, not in __init__.
        for service, name, address in self.routes:
            routed = self.torchserve_models[name]
            if routed is not None:
                served = torchserve.TorchServeBackend(
                    name,
                    address,
                    routed,
                    self.torchserve_token,
                    self.server_settings,
                    self.policy,
                    self.store_entries,
                )
                self.backends.append(served)
                server.add_generic_rpc_handlers([torchserve.HANDLERS[name](served)])
                log.info("%s calls go to TorchServe at %s (models: %s)", name, address, ", ".join(served.models))
                continue
            backend = Backend(name, address, self.server_settings)
            self.backends.append(backend)
            server.add_generic_rpc_handlers([forwarding_handler(service, backend, self.policy)])
        models_pb2_grpc.add_ModelServiceServicer_to_server(GatewayCatalogServicer(self.backends, self.policy), server)
        jobs_pb2_grpc.add_JobServiceServicer_to_server(
            JobServicer(self.job_queue, self.job_settings, self.image_settings, self.metrics), server
        )

    def store_entries(self) -> dict[str, ModelEntry]:
        """The model store's entries, to describe models served by TorchServe (none without a store)."""
        if self.entries is None:
            try:
                self.entries = ModelStore(self.model_settings.model_store).entries()
            except ModelStoreError as error:
                log.warning("models served by TorchServe are listed without details: %s", error)
                self.entries = {}
        return self.entries

    def job_queue(self) -> JobQueue:
        if self.queue is None:
            raise Unavailable("the job API needs Redis: set REDIS_URL (genserve up starts one)")
        return self.queue

    async def start(self) -> None:
        """Connect to Redis for the job API; nothing else to load."""
        if not self.redis_url:
            log.warning("REDIS_URL is not set: JobService answers UNAVAILABLE")
            return
        client = async_client(self.redis_url)
        self.queue = JobQueue(client, self.job_settings, self.redis_url)
        await self.queue.ensure_group()
        self.sampler = asyncio.create_task(self._sample_gauges(self.queue))

    async def _sample_gauges(self, queue: JobQueue) -> None:
        while True:
            with contextlib.suppress(RedisError):
                queued, running = await queue.counts()
                self.metrics.jobs_queued.set(queued)
                self.metrics.jobs_running.set(running)
            await asyncio.sleep(GAUGE_SECONDS)

    async def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.cancel()
        for backend in self.backends:
            await backend.close()
        if self.queue is not None:
            await self.queue.client.aclose()
