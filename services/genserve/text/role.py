"""The text role: loads the language models, then serves TextService and ModelService."""

from __future__ import annotations

import logging
import os
import signal

import grpc

from genserve.common.catalog import ModelServiceRole, model_info
from genserve.common.config import ModelSettings, TextSettings
from genserve.common.metrics import Metrics
from genserve.common.model_store import ModelStore
from genserve.text.decode_client import DecodeProcess
from genserve.text.generator import TextGenerator
from genserve.text.protocol import DecodeConfig
from genserve.text.servicer import TextServicer
from genserve.v1 import models_pb2, text_pb2, text_pb2_grpc

log = logging.getLogger(__name__)


class TextRole(ModelServiceRole):
    name = "text"
    api = text_pb2.DESCRIPTOR.services_by_name["TextService"]

    def __init__(self, models: ModelSettings, text: TextSettings, metrics: Metrics) -> None:
        self.model_settings = models
        self.text_settings = text
        self.metrics = metrics
        self.generator: TextGenerator | None = None
        self.decoder: DecodeProcess | None = None
        self.failure: str | None = None

    def add_api(self, server: grpc.aio.Server) -> None:
        text_pb2_grpc.add_TextServiceServicer_to_server(TextServicer(lambda: self.generator), server)

    def describe(self) -> list[models_pb2.ModelInfo] | None:
        if self.generator is None:
            return None
        return [
            model_info(m.entry, m.device, name == self.generator.default_model, m.details)
            for name, m in sorted(self.generator.models.items())
        ]

    async def start(self) -> None:
        settings = self.text_settings
        store = ModelStore(self.model_settings.model_store)
        self.decoder = DecodeProcess(
            DecodeConfig(
                model_store=store.root,
                selection=store.select("text", settings.models, settings.default_model),
                device=self.model_settings.device,
                torch_threads=self.model_settings.torch_threads,
                max_batch=settings.max_batch,
                max_waiting=settings.max_waiting,
                onednn_min_batch=settings.onednn_min_batch,
                stream_max_messages=settings.stream_max_messages,
                log_level=logging.getLevelName(logging.getLogger().level),
            ),
            self.metrics,
            self._decoder_lost,
        )
        # The decode process loads the models (it is the only one that runs torch); this event
        # loop only waits, so health keeps answering NOT_SERVING meanwhile.
        ready = await self.decoder.start()
        self.generator = TextGenerator(settings, ready.models, ready.default, self.decoder)
        devices = {m.device for m in ready.models.values()}
        log.info(
            "text: loaded %s on %s (default %s)", ", ".join(sorted(ready.models)), ", ".join(devices), ready.default
        )

    def _decoder_lost(self, reason: str) -> None:
        """Fatal: fail over by stopping the whole service (its supervisor restarts it)."""
        log.critical("%s; shutting the text service down", reason)
        self.failure = reason
        os.kill(os.getpid(), signal.SIGTERM)

    async def stop(self) -> None:
        if self.decoder is not None:
            await self.decoder.stop()
