"""Neural style transfer's parameters, progress records and validation: no torch, so the gateway
validates job submissions with exactly the checks (and messages) the engine applies.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from genserve.common.errors import InvalidArgument, require_choice, require_int, require_number
from genserve.vision.layers import vgg16_layer_names

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "style", "noise")
COLORS = ("none", "luminance", "histogram")

MIN_SIZE = 32  # the coarsest scale's longest side: relu5_1 is still 2x2 there
MAX_SCALES = 5
MAX_LAYER_WEIGHT = 1000.0
MAX_LOSS_WEIGHT = 1e9
MAX_LEARNING_RATE = 255.0  # one step across the whole intensity range
MAX_SEED = 2**64 - 1
# The engine's own ceilings, far above any service cap: they only stop absurd direct calls.
ENGINE_MAX_ITERATIONS = 100_000
ENGINE_MAX_SIZE = 4096


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


@dataclass(frozen=True)
class StyleLosses:
    """The weighted loss terms of one image; total = content + style + tv."""

    content: float
    style: float
    tv: float
    total: float


@dataclass(frozen=True)
class StyleProgress:
    """Reported after every step.

    step: steps done so far over all scales (1 after the first); total_steps = params.iterations.
    content, style, tv, total: the weighted loss terms evaluated by this step, i.e. of the image
        the step started from (the optimiser evaluates, then moves), so they lag the image by
        one update; `StyleTransfer.losses()` evaluates the current image.
    elapsed_seconds: wall time spent in `run` so far, over every run of this job (restored by
        `load_state`).
    """

    step: int
    total_steps: int
    content: float
    style: float
    tv: float
    total: float
    elapsed_seconds: float


# --- validation -----------------------------------------------------------------------------


def max_scales(max_size: int) -> int:
    """Most scales a result of longest side max_size allows: the coarsest keeps ≥ MIN_SIZE px."""
    return max(1, min(MAX_SCALES, 1 + math.floor(math.log2(max(max_size, 1) / MIN_SIZE))))


def validate(params: StyleParams, layer_names: Sequence[str], max_iterations: int, max_size: int) -> StyleParams:
    """Check every field of `params` against VGG16's `layer_names` and the caller's caps.

    Returns the params with style_layers as a tuple of (str, float). Raises InvalidArgument
    naming the field and its allowed range (or, for a layer, the valid names).
    """
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


def check_request(
    params: StyleParams, seed: int, preview_every: int, style_count: int, max_steps: int, max_size: int
) -> StyleParams:
    """Everything about a style transfer request but its images, as StylePreview and job submission check it.

    Returns the validated params with `seed` in them.
    """
    checked = validate(dataclasses.replace(params, seed=seed), vgg16_layer_names(), max_steps, max_size)
    check_preview_every(preview_every)
    if style_count < 1:
        raise InvalidArgument("styles must hold at least one style image")
    return checked
