"""VisionService over gRPC: protobuf ↔ the domain layer (service.py), nothing more.

Zero-valued fields mean "the default" (proto3 has no presence for them); the translation
below is the one place that knows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc

from genserve.common.errors import InvalidArgument, Unavailable, require_finite
from genserve.common.images import EncodedImage
from genserve.v1 import common_pb2, vision_pb2, vision_pb2_grpc
from genserve.vision.dream import DreamParams
from genserve.vision.service import DreamInput, StyleInput, VisionEngine
from genserve.vision.style import StyleParams

OPTIMIZERS = {
    vision_pb2.STYLE_OPTIMIZER_UNSPECIFIED: None,
    vision_pb2.STYLE_OPTIMIZER_LBFGS: "lbfgs",
    vision_pb2.STYLE_OPTIMIZER_ADAM: "adam",
}
INITS = {
    vision_pb2.STYLE_INIT_UNSPECIFIED: None,
    vision_pb2.STYLE_INIT_CONTENT: "content",
    vision_pb2.STYLE_INIT_STYLE: "style",
    vision_pb2.STYLE_INIT_NOISE: "noise",
}
COLORS = {
    vision_pb2.COLOR_PRESERVATION_UNSPECIFIED: None,
    vision_pb2.COLOR_PRESERVATION_NONE: "none",
    vision_pb2.COLOR_PRESERVATION_LUMINANCE: "luminance",
    vision_pb2.COLOR_PRESERVATION_HISTOGRAM: "histogram",
}


def _enum(table: Mapping[Any, str | None], value: int, field: str) -> str | None:
    if value not in table:
        raise InvalidArgument(f"{field} {value} is not a known value")
    return table[value]


def layer_weights(layers: list[common_pb2.LayerWeight], field: str) -> tuple[tuple[str, float], ...]:
    """LayerWeight list → ((name, weight), ...); weight 0 means 1, negative or NaN is refused."""
    out = []
    for i, item in enumerate(layers):
        weight = require_finite(f"{field}[{i}].weight", item.weight)
        if weight < 0:
            raise InvalidArgument(f"{field}[{i}].weight must be >= 0, got {weight:g}")
        out.append((item.layer, weight or 1.0))
    return tuple(out)


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


def style_params_from_proto(message: vision_pb2.StyleParams, base: StyleParams) -> StyleParams:
    """Proto params over `base` (the defaults of the calling API: preview caps or job defaults)."""
    given: dict[str, object] = {
        "content_layer": message.content_layer,
        "learning_rate": message.learning_rate,
        "iterations": message.iterations,
        "max_size": message.max_size,
        "scales": message.scales,
        "optimizer": _enum(OPTIMIZERS, message.optimizer, "params.optimizer"),
        "init": _enum(INITS, message.init, "params.init"),
        "color": _enum(COLORS, message.color, "params.color"),
    }
    values = {name: value for name, value in given.items() if value}  # 0 / "" / unspecified = default
    for weight in ("content_weight", "style_weight", "tv_weight"):
        if message.HasField(weight):  # 0 is a weight like any other here
            values[weight] = getattr(message, weight)
    if message.style_layers:
        values["style_layers"] = layer_weights(list(message.style_layers), "params.style_layers")
    return dataclasses.replace(base, **values)  # type: ignore[arg-type]


def style_images_from_proto(styles: list[vision_pb2.StyleImage]) -> list[tuple[bytes, float]]:
    """(image bytes, blend weight); weight 0 means 1, like a layer's."""
    images = []
    for i, style in enumerate(styles):
        weight = require_finite(f"styles[{i}].weight", style.weight)
        if weight < 0:
            raise InvalidArgument(f"styles[{i}].weight must be >= 0 (0 means 1), got {weight:g}")
        images.append((style.image.data, weight or 1.0))
    return images


def image_message(image: EncodedImage) -> common_pb2.Image:
    return common_pb2.Image(data=image.data, mime_type=image.mime_type, width=image.width, height=image.height)


class VisionServicer(vision_pb2_grpc.VisionServiceServicer):
    def __init__(self, engine: Callable[[], VisionEngine | None]) -> None:
        self._engine = engine

    def engine(self) -> VisionEngine:
        engine = self._engine()
        if engine is None:
            raise Unavailable("vision models are still loading; retry shortly")
        return engine

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
        async for update in self.engine().dream(domain):
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
        engine = self.engine()
        caps = StyleParams(iterations=engine.settings.preview_max_steps, max_size=engine.settings.preview_max_size)
        domain = StyleInput(
            content=request.content.data,
            styles=style_images_from_proto(list(request.styles)),
            params=style_params_from_proto(request.params, caps),
            seed=request.seed if request.HasField("seed") else None,
            preview_every=request.params.preview_every,
        )
        async for update in engine.style_preview(domain):
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
