"""DeepDream (Mordvintsev, Olah & Tyka, 2015): gradient ascent on a convnet's activations, over octaves.

The image is dreamed coarse to fine. At each octave (the photo shrunk by `octave_scale` per
octave, smallest first) the pixels climb the gradient of the chosen layers' activations for
`steps_per_octave` steps; the result is upscaled to the next octave and the detail that
shrinking lost (the photo at that size minus the upscaled smaller photo) is added back, so the
final image keeps the photo's sharpness while the dream grows patterns at every scale.

The ascent runs in [0, 1] RGB pixel space, whatever the backbone's own input scale, so that one
step size means the same thing for every backbone: each step moves pixels by `step_size` on
average (the gradient is divided by its mean absolute value, as in the original Caffe notebook),
and the image is clipped to [0, 1] after every step. Nothing here knows about gRPC or protobuf;
the vision service checks a request once with `validate` and runs `dream` on its torch thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from genserve.common.errors import InvalidArgument, require_int, require_number
from genserve.vision.backbones import Backbone
from genserve.vision.fast_copies import channels_last_copy
from genserve.vision.pixels import check_rgb_batch, resize

MAX_OCTAVES = 8
MAX_OCTAVE_SCALE = 2.0
MAX_STEPS_PER_OCTAVE = 200
MAX_STEP_SIZE = 1.0
MAX_JITTER = 64
MAX_LAYER_WEIGHT = 1000.0
MAX_SEED = 2**64 - 1
GRADIENT_EPS = 1e-8  # keeps the normalisation finite where the gradient vanishes (a flat, saturated image)
GUIDE_MATCH_ELEMENTS = 1 << 22  # image × guide positions compared at once when matching a guide (16 MiB)

# Layers dreamed when a request names none, with their weights. Mid-level layers give the classic
# DeepDream look (eyes, fur, scales, arches) at a cost that fits an interactive request; the
# deepest layers draw whole objects but need many more steps and cost several times more per step.
DEFAULT_LAYERS: dict[str, tuple[tuple[str, float], ...]] = {
    "efficientnet-lite0": (("blocks.4", 1.0), ("blocks.8", 1.0)),
    "vgg16": (("relu4_1", 1.0), ("relu4_3", 1.0)),
}


@dataclass(frozen=True)
class DreamParams:
    """What to dream and how hard; `validate` checks every field and fills in the defaults.

    layers: (layer name, weight) pairs whose activations the dream amplifies; the objective is
        the weighted sum of each layer's mean squared activation. Empty = DEFAULT_LAYERS of the
        backbone. Names are the backbone's `layer_names`; weights in (0, 1000]; shallow layers
        draw strokes and textures, deeper ones eyes, fur and object parts.
    octaves: number of scales dreamed, coarse to fine, 1..8 (default 3). More octaves grow
        larger patterns.
    octave_scale: size ratio between neighbouring octaves, (1, 2] (default 1.4).
    steps_per_octave: gradient-ascent steps at each octave, 1..200 (default 20).
    step_size: mean absolute change of a pixel per step, on the [0, 1] scale, (0, 1] (default
        0.005, about the original notebook's 1.5 levels of 255). Steps × step size sets how far
        the image departs from the photo.
    max_loss: stop an octave early once the objective exceeds this (> 0); None = never.
    jitter: the image is rolled by a random shift of up to this many pixels each way before each
        step and rolled back after it, 0..64 (default 0 = off). Hides the convnet's stride grid.
    seed: fixes the jitter shifts, 0..2^64-1; the same seed and inputs give the same image on the
        same device.
    """

    layers: tuple[tuple[str, float], ...] = ()
    octaves: int = 3
    octave_scale: float = 1.4
    steps_per_octave: int = 20
    step_size: float = 0.005
    max_loss: float | None = None
    jitter: int = 0
    seed: int = 0


@dataclass(frozen=True)
class DreamProgress:
    """Where a running dream stands, reported after every step.

    octave: index of the current octave, 0 (coarsest) .. octaves - 1 (full size).
    step: index of the step just taken within the octave, 0 .. steps_per_octave - 1.
    steps_done: steps taken so far in all octaves (1 after the first step).
    total_steps: octaves × steps_per_octave, the most a dream can take (max_loss may end
        octaves sooner, so steps_done can finish below it).
    loss: the objective at this step, measured on the image the step started from.
    elapsed_seconds: wall time since the dream started.
    """

    octave: int
    step: int
    steps_done: int
    total_steps: int
    loss: float
    elapsed_seconds: float


StepCallback = Callable[[DreamProgress, Callable[[], Tensor]], None]


# --- validation -----------------------------------------------------------------------------


def validate(params: DreamParams, backbone_name: str, layer_names: Sequence[str]) -> DreamParams:
    """Check every field of `params` for a backbone with `layer_names`; return them with defaults filled in.

    Raises InvalidArgument naming the field and its allowed range, or, for an unknown layer,
    listing the valid names.
    """
    layers = params.layers
    if not layers:
        if backbone_name not in DEFAULT_LAYERS:
            raise InvalidArgument(f"layers must be given for backbone {backbone_name!r}: it has no default layers")
        layers = DEFAULT_LAYERS[backbone_name]
    known = set(layer_names)
    checked: list[tuple[str, float]] = []
    for i, pair in enumerate(layers):
        name, weight = pair
        if name not in known:
            raise InvalidArgument(
                f"layers[{i}] {name!r} is not a layer of {backbone_name}; valid: {', '.join(layer_names)}"
            )
        if any(name == seen for seen, _ in checked):
            raise InvalidArgument(f"layers[{i}] {name!r} is listed twice; give each layer once")
        checked.append((name, require_number(f"layers[{i}].weight", weight, 0.0, MAX_LAYER_WEIGHT, low_open=True)))
    max_loss = params.max_loss
    if max_loss is not None:
        max_loss = require_number("max_loss", max_loss, 0.0, math.inf, low_open=True)
    return replace(
        params,
        layers=tuple(checked),
        octaves=require_int("octaves", params.octaves, 1, MAX_OCTAVES),
        octave_scale=require_number("octave_scale", params.octave_scale, 1.0, MAX_OCTAVE_SCALE, low_open=True),
        steps_per_octave=require_int("steps_per_octave", params.steps_per_octave, 1, MAX_STEPS_PER_OCTAVE),
        step_size=require_number("step_size", params.step_size, 0.0, MAX_STEP_SIZE, low_open=True),
        max_loss=max_loss,
        jitter=require_int("jitter", params.jitter, 0, MAX_JITTER),
        seed=require_int("seed", params.seed, 0, MAX_SEED),
    )


# --- octaves --------------------------------------------------------------------------------


def octave_sizes(height: int, width: int, octaves: int, octave_scale: float) -> list[tuple[int, int]]:
    """(height, width) of each octave, coarsest first; the last is the image's own size.

    Octave k from the end is the image shrunk by octave_scale^k, rounded, at least 1 pixel.
    """
    sizes = []
    for k in reversed(range(octaves)):
        shrink = octave_scale**k
        sizes.append((max(1, round(height / shrink)), max(1, round(width / shrink))))
    return sizes


# --- objective ------------------------------------------------------------------------------


def _positions(activation: Tensor) -> Tensor:
    """(1, C, h, w) or (1, C) → (C, positions)."""
    return activation[0].reshape(activation.shape[1], -1)


def _guided(activation: Tensor, guide: Tensor) -> Tensor:
    """The guided objective of the original notebook: each image position matches its best guide position.

    activation (1, C, h, w); guide (C, n) the guide's features at the same layer. For each image
    position i, j* = argmax_j <x_i, g_j> (no gradient: the maximum's gradient is g_j* itself);
    the objective is the mean over i of <x_i, g_j*> / C, so a guide equal to the image scores
    at least the image's mean squared activation. Compared in chunks to bound memory.
    """
    x = _positions(activation)  # (C, N)
    rows = max(1, GUIDE_MATCH_ELEMENTS // guide.shape[1])
    with torch.no_grad():
        best = torch.cat([(chunk.T @ guide).argmax(dim=1) for chunk in x.detach().split(rows, dim=1)])
    return (x * guide[:, best]).sum() / x.numel()


class _Objective:
    """The weighted sum over layers of mean squared activation, or of the guide match when a guide is given."""

    def __init__(self, model: Backbone, layers: tuple[tuple[str, float], ...], guide: Tensor | None) -> None:
        self.model = model
        self.names = [name for name, _ in layers]
        self.weights = [weight for _, weight in layers]
        self.guide: list[Tensor] | None = None
        if guide is not None:
            with torch.no_grad():
                found = model.features(_network_input(model, guide), self.names)
            self.guide = [_positions(found[name]).float() for name in self.names]

    def __call__(self, rgb: Tensor) -> Tensor:
        found = self.model.features(_network_input(self.model, rgb), self.names)
        total = rgb.new_zeros(())
        for i, (name, weight) in enumerate(zip(self.names, self.weights, strict=True)):
            activation = found[name]
            term = activation.square().mean() if self.guide is None else _guided(activation, self.guide[i])
            total = total + weight * term
        return total


def _network_input(model: Backbone, rgb: Tensor) -> Tensor:
    # channels_last: oneDNN's depthwise and 1x1 convolutions run ~1.5x faster on CPU in NHWC.
    return model.preprocess(rgb).contiguous(memory_format=torch.channels_last)


# --- a faster copy of the backbone ----------------------------------------------------------


def fast_backbone(backbone: Backbone) -> Backbone:
    """A frozen copy of `backbone` laid out for repeated forward-backward passes, cached per backbone.

    Batch norms (frozen statistics in eval mode) are folded into the convolutions before them,
    and every weight is stored channels_last. The activations equal the original's up to float
    rounding. The copy shares nothing with the original.
    """
    return channels_last_copy(backbone, "dream", lambda network: network.fold_batch_norms())


# --- the dream ------------------------------------------------------------------------------


def dream(
    backbone: Backbone,
    image: Tensor,
    params: DreamParams,
    guide: Tensor | None = None,
    on_step: StepCallback | None = None,
) -> Tensor:
    """Dream on `image` (1, 3, H, W) float RGB in [0, 1]; returns a new (1, 3, H, W) tensor in [0, 1].

    params: checked by `validate` for this backbone (its layers filled in), and trusted here.

    guide: an optional (1, 3, h, w) RGB image in [0, 1] of any size; when given, each layer's
        objective rewards image features that resemble the guide's (the best-matching guide
        position's dot product) instead of raw activation strength, so the dream grows the
        guide's patterns. Its features are read once, at its own size.
    on_step: called after every step with the progress and a function that returns the current
        image at full size (1, 3, H, W) in [0, 1], a new tensor each call (for previews: it costs
        a resize, so call it only when a preview is wanted). An exception it raises stops the
        dream at once and propagates (cancellation, deadlines).
    Runs on the backbone's device; torch's intra-op threads set the CPU parallelism.
    """
    check_rgb_batch("image", image)
    if guide is not None:
        check_rgb_batch("guide", guide)
    started = time.perf_counter()
    model = fast_backbone(backbone)
    device = next(model.parameters()).device
    original = image.detach().to(device=device, dtype=torch.float32).clamp(0.0, 1.0)
    objective = _Objective(model, params.layers, None if guide is None else guide.to(device, torch.float32))
    generator = torch.Generator().manual_seed(params.seed)  # on the CPU: the same shifts on every device
    sizes = octave_sizes(original.shape[-2], original.shape[-1], params.octaves, params.octave_scale)
    full_size = sizes[-1]
    total_steps = params.octaves * params.steps_per_octave
    steps_done = 0
    dreamed = previous_base = resize(original, sizes[0]).clone()  # updated in place below
    for octave, size in enumerate(sizes):
        base = resize(original, size)
        if octave > 0:
            # Detail reinjection: what shrinking the photo to the previous octave lost comes back.
            dreamed = (resize(dreamed, size) + base - resize(previous_base, size)).clamp_(0.0, 1.0)
        previous_base = base
        preview = _preview(dreamed, base, original, full_size)
        for step in range(params.steps_per_octave):
            loss, gradient = _loss_and_gradient(objective, dreamed, params.jitter, generator)
            if params.max_loss is not None and loss > params.max_loss:
                break  # this octave has dreamed enough: keep the image as it is
            # Normalised ascent: each step moves pixels by step_size on average, whatever the
            # layer's gradient scale, which shrinks and grows by orders of magnitude across layers.
            scale = params.step_size / (float(gradient.abs().mean()) + GRADIENT_EPS)
            dreamed.add_(gradient, alpha=scale).clamp_(0.0, 1.0)
            steps_done += 1
            if on_step is not None:
                elapsed = time.perf_counter() - started
                on_step(DreamProgress(octave, step, steps_done, total_steps, loss, elapsed), preview)
    return dreamed


def _loss_and_gradient(
    objective: _Objective, image: Tensor, jitter: int, generator: torch.Generator
) -> tuple[float, Tensor]:
    """The objective at `image` (1, 3, h, w) and its gradient with respect to the pixels.

    With jitter, the network sees the image rolled by a random shift and the gradient is rolled
    back: the dream cannot lock onto the positions of the network's stride grid.
    """
    shift = (0, 0)
    if jitter > 0:
        dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
        shift = (dy, dx)
    rolled = image.roll(shift, dims=(2, 3)) if shift != (0, 0) else image
    rolled = rolled.detach().requires_grad_(True)
    loss = objective(rolled)
    (gradient,) = torch.autograd.grad(loss, rolled)
    if shift != (0, 0):
        gradient = gradient.roll((-shift[0], -shift[1]), dims=(2, 3))
    return float(loss.detach()), gradient


def _preview(dreamed: Tensor, base: Tensor, original: Tensor, full_size: tuple[int, int]) -> Callable[[], Tensor]:
    """The current octave's image at full size, with the detail of the finer octaves put back."""

    def render() -> Tensor:
        if tuple(dreamed.shape[-2:]) == full_size:
            return dreamed.clone()
        return (resize(dreamed, full_size) + original - resize(base, full_size)).clamp_(0.0, 1.0)

    return render
