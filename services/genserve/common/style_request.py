"""A style-transfer request, checked once: protobuf in, a typed `StyleRequest` out. No torch.

The vision service (StylePreview) and the gateway's job API (SubmitStyleTransfer) both read
requests with `parse_style_request`, so they accept the same things with the same messages; the
style engine and the job worker trust what it returns. Zero-valued proto fields mean "the
default" (proto3 has no presence for them), except the loss weights, which are optional fields
so that 0 can be asked for.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genserve.common.errors import InvalidArgument, require_choice, require_finite, require_int, require_number
from genserve.v1 import common_pb2, vision_pb2

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "style", "noise")
COLORS = ("none", "luminance", "histogram")

MIN_SIZE = 32  # the coarsest scale's longest side: relu5_1 is still 2x2 there
MAX_SCALES = 5
MAX_LAYER_WEIGHT = 1000.0
MAX_LOSS_WEIGHT = 1e9
MAX_LEARNING_RATE = 255.0  # one step across the whole intensity range
MAX_SEED = 2**64 - 1


# Output channels of each conv, block by block (Simonyan & Zisserman's configuration D).
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg16_layer_names() -> list[str]:
    """conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ... relu5_3 (no pool5: nothing reads it)."""
    names: list[str] = []
    for block, widths in enumerate(VGG16_BLOCKS, start=1):
        if block > 1:
            names.append(f"pool{block - 1}")
        for conv in range(1, len(widths) + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names


@dataclass(frozen=True)
class StyleParams:
    """A style transfer's settings; `validate` checks every field.

    content_layer: VGG16 layer whose activations the result shares with the content photo.
    style_layers: (layer, weight) pairs whose Gram matrices the result shares with the styles;
        weights in [0, 1000], normalised to sum 1.
    content_weight, style_weight, tv_weight: weights of the three (normalised, dimensionless)
        loss terms, each in [0, 1e9]. Raise style_weight (or lower content_weight) for a
        stronger stylisation; tv_weight smooths pixel noise.
    optimizer: "lbfgs" (converges in far fewer steps) or "adam" (smaller state, steadier).
    learning_rate: Adam's step size in intensity levels (0..255 scale), (0, 255]; L-BFGS ignores it.
    init: start from the "content" photo, the (heaviest) "style" image stretched to the output
        size, or seeded uniform "noise".
    color: "none"; "luminance" (style transferred on luminance only, the content's chroma kept,
        YCbCr); "histogram" (each style recoloured to the content's colour mean and covariance
        before the transfer).
    iterations: optimiser steps over all scales, split evenly (the finest scale takes the rest).
    max_size: longest side of the result in pixels (the content is resized to it, up or down).
    scales: coarse-to-fine scales, each twice the previous size; the coarsest ≥ 32 px.
    seed: fixes the noise initialisation; the same seed and inputs give the same image on the
        same device.
    """

    content_layer: str = "relu4_2"
    style_layers: tuple[tuple[str, float], ...] = (
        ("relu1_1", 1.0),
        ("relu2_1", 1.0),
        ("relu3_1", 1.0),
        ("relu4_1", 1.0),
        ("relu5_1", 1.0),
    )
    content_weight: float = 1.0
    style_weight: float = 100.0
    tv_weight: float = 10.0
    optimizer: str = "lbfgs"
    learning_rate: float = 2.0
    init: str = "content"
    color: str = "none"
    iterations: int = 300
    max_size: int = 512
    scales: int = 1
    seed: int = 0


# --- validation -----------------------------------------------------------------------------


def max_scales(max_size: int) -> int:
    """Most scales a result of longest side max_size allows: the coarsest keeps ≥ MIN_SIZE px."""
    return max(1, min(MAX_SCALES, 1 + math.floor(math.log2(max(max_size, 1) / MIN_SIZE))))


def validate(params: StyleParams, max_iterations: int, max_size: int) -> StyleParams:
    """Check every field of `params` against VGG16's layer names and the caller's caps.

    Returns the params with style_layers as a tuple of (str, float). Raises InvalidArgument
    naming the field and its allowed range (or, for a layer, the valid names).
    """
    layer_names = vgg16_layer_names()
    valid = ", ".join(layer_names)
    if params.content_layer not in layer_names:
        raise InvalidArgument(f"content_layer {params.content_layer!r} is not a VGG16 layer; valid: {valid}")
    if not params.style_layers:
        raise InvalidArgument(f"style_layers must name at least one layer; valid: {valid}")
    layers: list[tuple[str, float]] = []
    for i, pair in enumerate(params.style_layers):
        name, weight = pair
        if name not in layer_names:
            raise InvalidArgument(f"style_layers[{i}] {name!r} is not a VGG16 layer; valid: {valid}")
        if any(name == seen for seen, _ in layers):
            raise InvalidArgument(f"style_layers[{i}] {name!r} is listed twice; give each layer once")
        layers.append((name, require_number(f"style_layers[{i}].weight", weight, 0.0, MAX_LAYER_WEIGHT)))
    if not any(weight > 0 for _, weight in layers):
        raise InvalidArgument("style_layers weights must not all be 0; give at least one a weight in (0, 1000]")
    content_weight = require_number("content_weight", params.content_weight, 0.0, MAX_LOSS_WEIGHT)
    style_weight = require_number("style_weight", params.style_weight, 0.0, MAX_LOSS_WEIGHT)
    tv_weight = require_number("tv_weight", params.tv_weight, 0.0, MAX_LOSS_WEIGHT)
    require_choice("optimizer", params.optimizer, OPTIMIZERS)
    learning_rate = require_number("learning_rate", params.learning_rate, 0.0, MAX_LEARNING_RATE, low_open=True)
    require_choice("init", params.init, INITS)
    require_choice("color", params.color, COLORS)
    size = require_int("max_size", params.max_size, MIN_SIZE, max(MIN_SIZE, max_size))
    scales = require_int("scales", params.scales, 1, max_scales(size))
    iterations = require_int("iterations", params.iterations, 1, max_iterations)
    if iterations < scales:
        raise InvalidArgument(
            f"iterations must be in [{scales}, {max_iterations}] for {scales} scales, got {iterations}"
        )
    return dataclasses.replace(
        params,
        style_layers=tuple(layers),
        content_weight=content_weight,
        style_weight=style_weight,
        tv_weight=tv_weight,
        learning_rate=learning_rate,
        seed=require_int("seed", params.seed, 0, MAX_SEED),
    )


MAX_PREVIEW_EVERY = 1000


def check_preview_every(value: int) -> int:
    if not 0 <= value <= MAX_PREVIEW_EVERY:
        raise InvalidArgument(f"preview_every must be in [0, {MAX_PREVIEW_EVERY}] (0 = no previews), got {value}")
    return value


def params_to_json(params: StyleParams) -> str:
    """Canonical JSON (sorted keys): equal params give equal text."""
    return json.dumps(dataclasses.asdict(params), sort_keys=True)


def params_from_json(text: str) -> StyleParams:
    values = json.loads(text)
    values["style_layers"] = tuple((str(name), float(weight)) for name, weight in values["style_layers"])
    return StyleParams(**values)


# --- protobuf -------------------------------------------------------------------------------

PROTO_OPTIMIZERS = {
    vision_pb2.STYLE_OPTIMIZER_UNSPECIFIED: None,
    vision_pb2.STYLE_OPTIMIZER_LBFGS: "lbfgs",
    vision_pb2.STYLE_OPTIMIZER_ADAM: "adam",
}
PROTO_INITS = {
    vision_pb2.STYLE_INIT_UNSPECIFIED: None,
    vision_pb2.STYLE_INIT_CONTENT: "content",
    vision_pb2.STYLE_INIT_STYLE: "style",
    vision_pb2.STYLE_INIT_NOISE: "noise",
}
PROTO_COLORS = {
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


def _params_from_proto(message: vision_pb2.StyleParams, base: StyleParams) -> StyleParams:
    """Proto params over `base` (the defaults of the calling API: preview caps or job defaults)."""
    given: dict[str, object] = {
        "content_layer": message.content_layer,
        "learning_rate": message.learning_rate,
        "iterations": message.iterations,
        "max_size": message.max_size,
        "scales": message.scales,
        "optimizer": _enum(PROTO_OPTIMIZERS, message.optimizer, "params.optimizer"),
        "init": _enum(PROTO_INITS, message.init, "params.init"),
        "color": _enum(PROTO_COLORS, message.color, "params.color"),
    }
    values = {name: value for name, value in given.items() if value}  # 0 / "" / unspecified = default
    for weight in ("content_weight", "style_weight", "tv_weight"):
        if message.HasField(weight):  # 0 is a weight like any other here
            values[weight] = getattr(message, weight)
    if message.style_layers:
        values["style_layers"] = layer_weights(list(message.style_layers), "params.style_layers")
    return dataclasses.replace(base, **values)  # type: ignore[arg-type]


def _style_images_from_proto(styles: list[vision_pb2.StyleImage]) -> list[tuple[bytes, float]]:
    """(image bytes, blend weight); weight 0 means 1, like a layer's."""
    images = []
    for i, style in enumerate(styles):
        weight = require_finite(f"styles[{i}].weight", style.weight)
        if weight < 0:
            raise InvalidArgument(f"styles[{i}].weight must be >= 0 (0 means 1), got {weight:g}")
        images.append((style.image.data, weight or 1.0))
    return images


@dataclass(frozen=True)
class StyleRequest:
    """A checked style transfer: what the engine runs and the job queue stores.

    content: the content photo's encoded bytes; styles: (encoded bytes, blend weight > 0 for at
    least one) pairs; params: every field checked, the seed filled in; preview_every: steps
    between preview images (0 = none). Images are decoded (with the pixel limits) by whoever runs
    or stores the request.
    """

    content: bytes
    styles: tuple[tuple[bytes, float], ...]
    params: StyleParams
    preview_every: int


def parse_style_request(
    message: vision_pb2.StyleTransferRequest,
    defaults: StyleParams,
    max_steps: int,
    max_size: int,
    seed: int,
    beyond_caps: tuple[str, str] | None = None,
) -> StyleRequest:
    """Check `message` over `defaults` (the calling API's defaults) against the caps max_steps / max_size.

    `beyond_caps`, when given, is (the API's name, where bigger runs go): a request over the caps
    is then refused with both before the per-field checks. Raises InvalidArgument naming the field and
    what is allowed.
    """
    styles = _style_images_from_proto(list(message.styles))
    params = _params_from_proto(message.params, defaults)
    if beyond_caps and (params.max_size > max_size or params.iterations > max_steps):
        raise InvalidArgument(
            f"{beyond_caps[0]} runs at most {max_steps} steps at most {max_size} px (asked: {params.iterations} "
            f"steps, {params.max_size} px); {beyond_caps[1]}"
        )
    checked = validate(dataclasses.replace(params, seed=seed), max_steps, max_size)
    preview_every = check_preview_every(message.params.preview_every)
    if not styles:
        raise InvalidArgument("styles must hold at least one style image")
    return StyleRequest(message.content.data, tuple(styles), checked, preview_every)
