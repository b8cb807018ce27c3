"""VisionService over gRPC: protobuf ↔ the domain layer (service.py), nothing more.

Zero-valued fields mean "the default" (proto3 has no presence for them); the translation
below is the one place that knows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable

import grpc

from genserve.common.errors import loaded
from genserve.common.images import image_message
from genserve.common.seeds import fresh_seed
from genserve.common.style_request import StyleParams, layer_weights, parse_style_request
from genserve.v1 import vision_pb2, vision_pb2_grpc
from genserve.vision.dream import DreamParams
from genserve.vision.operations import DreamInput, VisionOperations


def dream_params_from_proto(request: vision_pb2.DreamRequest) -> DreamParams:
    given: dict[str, object] = {
        "octaves": request.octaves,
        "octave_scale": request.octave_scale,
        "steps_per_octave": request.steps_per_octave,
        "step_size": request.step_size,
        "jitter": request.jitter,
    }
    values = {name: value for name, value in given.items() if value}  # 0 = default
    if request.layers:
        values["layers"] = layer_weights(list(request.layers), "layers")
    if request.HasField("max_loss"):
        values["max_loss"] = request.max_loss
    return dataclasses.replace(DreamParams(), **values)  # type: ignore[arg-type]


class VisionServicer(vision_pb2_grpc.VisionServiceServicer):
    def __init__(self, operations: Callable[[], VisionOperations | None]) -> None:
        self._operations = operations

    def operations(self) -> VisionOperations:
        return loaded(self._operations(), "vision models")

    async def Dream(
        self, request: vision_pb2.DreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[vision_pb2.DreamEvent]:
        domain = DreamInput(
            image=request.image.data,
            params=dream_params_from_proto(request),
            backbone=request.backbone,
            guide=request.guide.data,
            seed=request.seed if request.HasField("seed") else None,
            preview_every=request.preview_every,
            max_size=request.max_size,
        )
        async for update in self.operations().dream(domain):
            event = vision_pb2.DreamEvent(seed=update.seed)
            if update.progress is not None:
                p = update.progress
                event.octave, event.step, event.steps_done, event.total_steps = (
                    p.octave,
                    p.step,
                    p.steps_done,
                    p.total_steps,
                )
                event.loss, event.elapsed_seconds = p.loss, p.elapsed_seconds
            if update.preview is not None:
                event.preview.CopyFrom(image_message(update.preview))
            if update.result is not None:
                event.result.CopyFrom(image_message(update.result))
            yield event

    async def StylePreview(
        self, request: vision_pb2.StyleTransferRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[vision_pb2.StyleEvent]:
        operations = self.operations()
        max_steps, max_size = operations.settings.preview_max_steps, operations.settings.preview_max_size
        checked = parse_style_request(
            request,
            StyleParams(iterations=max_steps, max_size=max_size),
            max_steps,
            max_size,
            request.seed if request.HasField("seed") else fresh_seed(),
            beyond_caps=("StylePreview", "submit bigger runs as jobs with JobService.SubmitStyleTransfer"),
        )
        async for update in operations.style_preview(checked):
            event = vision_pb2.StyleEvent(seed=update.seed)
            if update.progress is not None:
                p = update.progress
                event.step, event.total_steps, event.elapsed_seconds = p.step, p.total_steps, p.elapsed_seconds
                event.losses.CopyFrom(vision_pb2.StyleLosses(content=p.content, style=p.style, tv=p.tv, total=p.total))
            if update.preview is not None:
                event.preview.CopyFrom(image_message(update.preview))
            if update.result is not None:
                event.result.CopyFrom(image_message(update.result))
            yield event
