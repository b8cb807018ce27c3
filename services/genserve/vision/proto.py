"""Protobuf → style-transfer parameters and images, and images → protobuf: no torch, so the vision
service and the job API (in the gateway) read requests with the same code and the same messages.

Zero-valued fields mean "the default" (proto3 has no presence for them), except the loss weights,
which are optional fields so that 0 can be asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from genserve.common.errors import InvalidArgument, require_finite
from genserve.common.images import EncodedImage
from genserve.v1 import common_pb2, vision_pb2
from genserve.vision.style_params import StyleParams

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
