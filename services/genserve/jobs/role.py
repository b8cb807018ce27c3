"""The worker role (`genserve serve worker`): loads VGG16, then runs style-transfer jobs from Redis.

It serves gRPC health only (SERVING once the model is loaded and Redis answered), so every
process of the stack is probed the same way. Run any number of them, on any machine that
reaches the Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading

import grpc

from genserve.common.config import ConfigError, ImageSettings, JobSettings, ModelSettings
from genserve.common.devices import configure_torch, pick_device
from genserve.common.errors import Unavailable
from genserve.common.metrics import Metrics
from genserve.common.model_store import ModelStore
from genserve.common.redis_clients import redacted, sync_client
from genserve.jobs.worker import JobWorker
from genserve.vision.backbones import VGG16Features
from genserve.vision.weights import load_from_store

log = logging.getLogger(__name__)


class WorkerRole:
    name = "worker"

    def __init__(
        self, models: ModelSettings, jobs: JobSettings, images: ImageSettings, redis_url: str, metrics: Metrics
    ) -> None:
        self.model_settings = models
        self.job_settings = jobs
        self.image_settings = images
        self.redis_url = redis_url
        self.metrics = metrics
        self.failure: str | None = None
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def service_names(self) -> list[str]:
        return []

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return []

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Health only: the worker's work comes from Redis, not from calls."""

    async def start(self) -> None:
        settings = self.job_settings
        if not self.redis_url:
            raise Unavailable("the worker needs REDIS_URL (redis://host:port/db)")
        if settings.heartbeat_seconds * 2 > settings.claim_idle_seconds:
            raise ConfigError(
                f"GENSERVE_JOB_HEARTBEAT_SECONDS ({settings.heartbeat_seconds}) must be under half of "
                f"GENSERVE_JOB_CLAIM_IDLE_SECONDS ({settings.claim_idle_seconds}), or live workers lose their jobs"
            )
        client = sync_client(self.redis_url)
        await asyncio.to_thread(client.ping)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()

        def work() -> None:
            # One thread does all torch work: loading and every job.
            try:
                configure_torch(self.model_settings.torch_threads)
                vgg = load_from_store(
                    ModelStore(self.model_settings.model_store), "vgg16", pick_device(self.model_settings.device)
                )
                assert isinstance(vgg, VGG16Features)
                worker = JobWorker(client, vgg, settings, self.image_settings, self.metrics, self.stop_event)
            except BaseException as error:
                loop.call_soon_threadsafe(ready.set_exception, error)
                return
            loop.call_soon_threadsafe(ready.set_result, None)
            log.info("worker %s: ready, taking jobs from %s", worker.consumer, redacted(self.redis_url))
            try:
                worker.run()
            except BaseException as error:  # a bug: fail loudly, the supervisor restarts the worker
                log.exception("worker loop died")
                self.failure = f"worker loop died: {error}"
                os.kill(os.getpid(), signal.SIGTERM)

        self.thread = threading.Thread(target=work, name="job-worker", daemon=True)
        self.thread.start()
        await ready

    async def stop(self) -> None:
        """Finish the current step, checkpoint, hand the job back, then return."""
        self.stop_event.set()
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, 60)
