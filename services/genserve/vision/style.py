"""Neural style transfer (Gatys, Ecker & Bethge, 2015): optimise the pixels of an image so that
VGG16 sees the content photo's layout and the style images' textures in it.

Losses, each normalised so that one set of weights works at every image size and for every
style image (all three are dimensionless and roughly O(1) when the image is far from its goal):

- content = ‖F − P‖² / ‖P‖² at `content_layer`: F the image's activations, P the content's
  (relative squared error, so it does not depend on the layer's activation scale).
- style = Σ_l w_l E_l / Σ_l w_l over `style_layers`, with E_l = ‖G_l − A_l‖² / ‖A_l‖²:
  G = F Fᵀ / (C·H·W) is the Gram matrix averaged over positions (it does not grow with the
  image), A the style images' Grams blended by weight. The division by ‖A_l‖² is Gatys'
  per-layer weighting made automatic: raw Gram errors differ by ~10⁴ between relu1_1 and
  relu5_1, so "equal weights" would otherwise mean "only the shallow layers".
- tv = mean over neighbouring pixel pairs of the squared difference, pixels on the [0, 1] scale.

total = content_weight·content + style_weight·style + tv_weight·tv; progress reports the three
weighted terms, so they add up to the total.

The optimisation variable is VGG16's own input: BGR on the 0..255 scale minus the channel means
(what `VGG16Features.preprocess` gives). Every channel has the same scale and range there, so the
problem is as well-conditioned as pixel space (the two differ by a constant factor and a shift),
the gradient is the network's own, and L-BFGS and Adam step sizes read as intensity levels
(Adam's learning rate 1.0 = at most about one 8-bit level per step). The pixels are not clamped
while optimising (a clamp would break L-BFGS's curvature pairs); they are clamped to [0, 1] on
the way out, and the content and TV terms keep them within a few levels of that range.

One step = one optimiser iteration = one evaluation of the loss and its gradient (one VGG16
forward and backward to the deepest layer used): L-BFGS runs with a fixed step of 1 and no line
search (as in Johnson's neural-style), Adam evaluates once per step by construction. The targets
(content activations, blended style Grams) are computed once per scale.

Nothing here imports gRPC or Redis; the vision servicer and the job worker drive `StyleTransfer`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from genserve.common.errors import (
    InvalidArgument,
    require_finite,
    require_range,
)
from genserve.common.style_request import StyleParams, params_to_json
from genserve.vision.backbones import VGG16Features
from genserve.vision.color import grey, luminance, match_color, match_luminance, with_chroma_of
from genserve.vision.fast_copies import channels_last_copy
from genserve.vision.pixels import check_rgb_batch, resize
from genserve.vision.style_progress import StyleLosses, StyleProgress

# L-BFGS curvature pairs kept. Beyond ~10 the result per step hardly improves (measured at 128 and
# 256 px), while each pair costs two image-sized vectors in memory and in every checkpoint.
LBFGS_HISTORY = 10
NORM_FLOOR = 1e-12  # keeps the relative losses finite for an all-zero target (a black image at a dead layer)
STATE_FORMAT = "genserve.style-state/1"


class StateMismatch(ValueError):
    """A saved state does not belong to this engine's inputs, parameters or format."""


# --- the math -------------------------------------------------------------------------------


def _positions(features: Tensor) -> Tensor:
    """(B, C, H, W) → (B, HW, C) rows of per-position feature vectors; a view when the memory is channels_last."""
    b, c, h, w = features.shape
    return features.permute(0, 2, 3, 1).reshape(b, h * w, c)


class _Gram(torch.autograd.Function):
    """G = Pᵀ P · scale for positions P (B, HW, C), with a one-product backward.

    Autograd would differentiate the product through both of its operands (two (HW x C) · (C x C)
    products); since G is symmetric in P, dL/dP = P (dG + dGᵀ) · scale takes one. The Gram
    products are ~5% of a style step's arithmetic, so this saves ~2%-3% of a step.
    """

    @staticmethod
    def forward(ctx: Any, positions: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(positions)
        ctx.scale = scale
        return (positions.mT @ positions) * scale

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[Tensor, None]:
        (positions,) = ctx.saved_tensors
        grad = grad_outputs[0]
        return positions @ ((grad + grad.mT) * ctx.scale), None


def gram_matrix(features: Tensor) -> Tensor:
    """(B, C, H, W) activations → (B, C, C) Gram matrices G[i, j] = Σ_p F[i, p] F[j, p] / (C·H·W).

    Dividing by H·W makes G a mean over positions, the same for a 256 px and a 1024 px image of
    one texture; dividing by C as well is Gatys' normalisation (his 1/(4N²M²) is this, squared,
    up to the constant 4). Works on either memory format; channels_last activations (what the
    engine produces) are read as (B, HW, C) rows without a copy.
    """
    _, c, h, w = features.shape
    return _Gram.apply(_positions(features), 1.0 / (c * h * w))


def total_variation(image: Tensor) -> Tensor:
    """Mean squared difference between vertical and between horizontal neighbours of image (B, C, H, W)."""
    dy = image[:, :, 1:, :] - image[:, :, :-1, :]
    dx = image[:, :, :, 1:] - image[:, :, :, :-1]
    return dy.square().sum() / max(dy.numel(), 1) + dx.square().sum() / max(dx.numel(), 1)


def blend_targets(grams: Sequence[Mapping[str, Tensor]], weights: Sequence[float]) -> dict[str, Tensor]:
    """Σ_k w_k G_k / Σ_k w_k per layer: the style target of several style images (weights ≥ 0, sum > 0)."""
    total = sum(weights)
    blended: dict[str, Tensor] = {}
    for gram, weight in zip(grams, weights, strict=True):
        for name, value in gram.items():
            term = value * (weight / total)
            blended[name] = term if name not in blended else blended[name] + term
    return blended


def fit_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """(height, width) scaled so that the longer side is `longest` px, aspect ratio kept."""
    scale = longest / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def scale_sizes(height: int, width: int, max_size: int, scales: int) -> list[tuple[int, int]]:
    """(height, width) of each scale, coarsest first: longest sides max_size / 2^k, k = scales-1 .. 0."""
    return [fit_size(height, width, round(max_size / 2**k)) for k in reversed(range(scales))]


# --- the engine -----------------------------------------------------------------------------


@dataclass
class _Targets:
    """What one scale's loss compares against, with every constant factor folded in."""

    layers: list[str]  # VGG layers to read, content layer first
    content: Tensor | None  # P (1, C, H, W) at the content layer, None when content_weight = 0
    content_factor: float  # content_weight / ‖P‖²
    grams: dict[str, Tensor]  # blended A_l (1, C, C)
    style_factors: dict[str, float]  # style_weight · w_l / (Σw · ‖A_l‖²)
    tv_factor: float  # tv_weight / 255², since the variable is on the 0..255 scale


def _digest(content: Tensor, styles: Sequence[tuple[Tensor, float]]) -> str:
    """sha256 of the inputs as given: a saved state is only loaded into an engine with the same ones."""
    digest = hashlib.sha256()
    for image, weight in [(content, 1.0), *styles]:
        array = image.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{tuple(array.shape)}:{weight!r};".encode())
        digest.update(array.numpy().tobytes())
    return digest.hexdigest()


class StyleTransfer:
    """One style-transfer job: inputs, targets, the image being optimised and the optimiser state.

    content: (1, 3, H, W) RGB in [0, 1]; styles: (image (1, 3, h, w) RGB in [0, 1], blend weight
    ≥ 0) pairs, weights summing > 0. The content is resized so its longest side is
    params.max_size (per scale: max_size / 2^k); each style image so its longest side matches.
    Runs on the device of `vgg`, whose weights are never changed or differentiated. Not
    thread-safe: one engine per job (the VGG module itself may be shared). `params` are trusted:
    requests are checked once, by `genserve.common.style_request` (`parse_style_request`, or
    `validate` for a direct call).
    """

    def __init__(
        self, vgg: VGG16Features, content: Tensor, styles: Sequence[tuple[Tensor, float]], params: StyleParams
    ) -> None:
        self.params = params
        check_rgb_batch("content", content)
        if not styles:
            raise InvalidArgument("styles must hold at least one style image")
        for i, (image, weight) in enumerate(styles):
            check_rgb_batch(f"styles[{i}].image", image)
            require_range(f"styles[{i}].weight", require_finite(f"styles[{i}].weight", weight), 0.0, math.inf)
        if not any(weight > 0 for _, weight in styles):
            raise InvalidArgument("styles weights must not all be 0; give at least one a positive weight")
        # Weights stored channels_last: reordering them on every call took 40 % of a step at 128 px;
        # the copy costs the weights' 59 MB once.
        self._vgg = channels_last_copy(vgg, "style")
        self._device = next(vgg.parameters()).device
        self._inputs_sha256 = _digest(content, styles)

        def prepare(image: Tensor) -> Tensor:
            return image.detach().to(self._device, torch.float32).clamp(0.0, 1.0)

        self._content = prepare(content)  # original colours: the chroma "luminance" puts back
        # Zero-weight styles are dropped: they would cost a VGG pass for nothing.
        kept = [(prepare(image), float(weight)) for image, weight in styles if weight > 0]
        self._style_weights = [weight for _, weight in kept]
        # What VGG is shown: grey images for a luminance-only transfer, recoloured styles for
        # histogram matching, done once at the inputs' own size.
        if self.params.color == "luminance":
            content_y = luminance(self._content)
            self._net_content = grey(content_y)
            self._net_styles = [grey(match_luminance(luminance(image), content_y)) for image, _ in kept]
        elif self.params.color == "histogram":
            self._net_content = self._content
            self._net_styles = [match_color(image, self._content) for image, _ in kept]
        else:
            self._net_content = self._content
            self._net_styles = [image for image, _ in kept]

        height, width = self._content.shape[-2:]
        self._sizes = scale_sizes(height, width, self.params.max_size, self.params.scales)
        # Even split of the steps over the scales; the finest scale takes the remainder.
        share = self.params.iterations // self.params.scales
        self._scale_ends = [share * (k + 1) for k in range(self.params.scales)]
        self._scale_ends[-1] = self.params.iterations
        self._step = 0
        self._scale = 0
        self._elapsed = 0.0
        self._targets: _Targets | None = None
        self._image = self._initial_image()
        self._optimizer = self._new_optimizer()

    # --- public ------------------------------------------------------------------------------

    @property
    def step(self) -> int:
        """Steps done so far, over all scales."""
        return self._step

    @property
    def total_steps(self) -> int:
        return self.params.iterations

    @property
    def scale(self) -> int:
        """Index of the current scale, 0 (coarsest) .. scales - 1 (max_size)."""
        return self._scale

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the current scale's image; the last scale's is the result's."""
        return self._sizes[self._scale]

    def run(self, on_step: Callable[[StyleProgress], None] | None = None, until_step: int | None = None) -> Tensor:
        """Optimise until step params.iterations (or `until_step`, clamped to it); return `current_image()`.

        on_step is called after every step; an exception it raises stops the run at once (no
        further evaluation) and propagates, leaving the engine consistent: `step` counts the
        steps taken and `state()` can be saved. Calling run again continues where it stopped.
        """
        stop = self.total_steps if until_step is None else max(0, min(int(until_step), self.total_steps))
        started = time.perf_counter()
        elapsed_before = self._elapsed
        while self._step < stop:
            if self._step >= self._scale_ends[self._scale]:
                self._next_scale()
            losses = self._take_step()
            self._step += 1
            self._elapsed = elapsed_before + time.perf_counter() - started
            if on_step is not None:
                progress = StyleProgress(
                    self._step, self.total_steps, **dataclasses.asdict(losses), elapsed_seconds=self._elapsed
                )
                on_step(progress)
        return self.current_image()

    def current_image(self) -> Tensor:
        """The image as it stands: (1, 3, h, w) RGB in [0, 1] at the current scale's size, colours preserved."""
        with torch.no_grad():
            rgb = (self._image.detach() + self._vgg.mean_bgr).flip(1) / 255.0
            if self.params.color == "luminance":
                rgb = with_chroma_of(rgb, resize(self._content, self.size))
            return rgb.clamp(0.0, 1.0)

    def losses(self) -> StyleLosses:
        """The weighted loss terms of the current image (one forward pass, no gradient)."""
        with torch.no_grad():
            return self._losses(*self._terms(self._image.detach(), self._ensure_targets()))

    def state(self) -> tuple[dict[str, Tensor], dict[str, str]]:
        """Everything needed to continue this run in a fresh engine, as safetensors-ready tensors and metadata.

        Tensors: "image" (the variable, (1, 3, h, w) on the VGG input scale) and "optimizer.*"
        (the optimiser's state: Adam's two moment estimates and step count; for L-BFGS its whole
        history, i.e. up to LBFGS_HISTORY (s, y) curvature pairs with their 1/yᵀs, plus the last
        direction, step length, gradient, loss and Hessian scale). Keeping the L-BFGS history
        makes a resumed run take exactly the steps the interrupted one would have (bit-identical
        on the same device); without it L-BFGS restarts with a tiny gradient step and spends tens
        of steps rebuilding its curvature model. Cost: about 2·LBFGS_HISTORY + 4 image-sized
        float32 vectors (≈ 75 MB at 512x512; Adam ≈ 9 MB). All tensors are contiguous CPU tensors
        that share no memory, so `safetensors.torch.save(tensors, metadata)` takes them as they are.
        Metadata (all str): format, step, scale, elapsed_seconds, optimizer, the optimiser
        state's structure (JSON), the params (JSON) and the inputs' sha256, which `load_state`
        checks.
        """
        tensors: dict[str, Tensor] = {"image": self._image.detach().to("cpu").clone().contiguous()}
        live = self._optimizer.state_dict()["state"].get(0, {})
        # "al" is L-BFGS's scratch buffer, rewritten before every read.
        structure = {key: _pack(value, f"optimizer.{key}", tensors) for key, value in live.items() if key != "al"}
        metadata = {
            "format": STATE_FORMAT,
            "step": str(self._step),
            "scale": str(self._scale),
            "elapsed_seconds": repr(self._elapsed),
            "optimizer": self.params.optimizer,
            "optimizer_state": json.dumps(structure),
            "params": params_to_json(self.params),
            "inputs_sha256": self._inputs_sha256,
        }
        return tensors, metadata

    def load_state(self, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> None:
        """Continue from `state()` output of an engine built with the same inputs and params.

        Raises StateMismatch (a ValueError) when the state is of another format, other params,
        other inputs, or is inconsistent.
        """
        if metadata.get("format") != STATE_FORMAT:
            raise StateMismatch(f"state format {metadata.get('format')!r} is not {STATE_FORMAT!r}")
        if metadata.get("params") != params_to_json(self.params):
            raise StateMismatch("state was saved with other params than this engine's")
        if metadata.get("inputs_sha256") != self._inputs_sha256:
            raise StateMismatch("state was saved for other content/style images or style weights than this engine's")
        try:
            step, scale = int(metadata["step"]), int(metadata["scale"])
            elapsed = float(metadata["elapsed_seconds"])
            structure = json.loads(metadata["optimizer_state"])
            image = tensors["image"]
        except (KeyError, ValueError) as error:
            raise StateMismatch(f"state is incomplete or malformed: {error}") from error
        first = 0 if scale == 0 else self._scale_ends[scale - 1] if 0 < scale < len(self._sizes) else -1
        if first < 0 or not first <= step <= self._scale_ends[scale]:
            raise StateMismatch(f"state's step {step} does not lie in its scale {scale}")
        if tuple(image.shape) != (1, 3, *self._sizes[scale]):
            needed = (1, 3, *self._sizes[scale])
            raise StateMismatch(f"state's image is {tuple(image.shape)}, scale {scale} needs {needed}")
        self._scale, self._step, self._elapsed = scale, step, elapsed
        self._targets = None
        self._image = image.detach().to(self._device, torch.float32).clone().requires_grad_(True)
        self._optimizer = self._new_optimizer()
        if structure:
            # Cloned: L-BFGS updates some of its buffers in place, which must not reach the caller's tensors.
            restored = {key: _unpack(value, tensors) for key, value in structure.items()}
            packed = self._optimizer.state_dict()
            packed["state"] = {0: restored}
            self._optimizer.load_state_dict(packed)

    # --- internals ---------------------------------------------------------------------------

    def _initial_image(self) -> Tensor:
        size = self._sizes[0]
        if self.params.init == "content":
            rgb = resize(self._net_content, size)
        elif self.params.init == "style":
            heaviest = max(range(len(self._style_weights)), key=lambda k: self._style_weights[k])
            rgb = resize(self._net_styles[heaviest], size)  # stretched to the content's shape
        else:
            generator = torch.Generator(device=self._device).manual_seed(self.params.seed)
            channels = 1 if self.params.color == "luminance" else 3
            rgb = torch.rand((1, channels, *size), generator=generator, device=self._device).expand(-1, 3, -1, -1)
        return self._vgg.preprocess(rgb).contiguous().requires_grad_(True)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        if self.params.optimizer == "adam":
            return torch.optim.Adam([self._image], lr=self.params.learning_rate)
        # max_iter=1: one optimiser.step() call = one L-BFGS iteration = one closure evaluation;
        # the history persists between calls, so this is the same iteration sequence as one long call.
        return torch.optim.LBFGS([self._image], lr=1.0, max_iter=1, history_size=LBFGS_HISTORY)

    def _next_scale(self) -> None:
        """Upsample the image to the next scale and start a fresh optimiser there."""
        self._scale += 1
        upsampled = resize(self._image.detach(), self._sizes[self._scale])
        self._image = upsampled.contiguous().requires_grad_(True)
        self._optimizer = self._new_optimizer()
        self._targets = None

    def _ensure_targets(self) -> _Targets:
        if self._targets is None:
            self._targets = self._compute_targets()
        return self._targets

    def _network_input(self, variable: Tensor) -> Tensor:
        # channels_last: oneDNN's convolutions run ~15% faster on CPU in NHWC (measured at 256-512 px).
        return variable.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def _compute_targets(self) -> _Targets:
        p, vgg, size = self.params, self._vgg, self._sizes[self._scale]
        style_layers = [name for name, weight in p.style_layers if weight > 0] if p.style_weight > 0 else []
        content_layers = [p.content_layer] if p.content_weight > 0 else []
        layers = list(dict.fromkeys(content_layers + style_layers))
        content, content_factor = None, 0.0
        if content_layers:
            content_input = self._network_input(vgg.preprocess(resize(self._net_content, size)))
            content = vgg.features(content_input, content_layers)[p.content_layer]
            content_factor = p.content_weight / max(float(content.double().square().sum()), NORM_FLOOR)
        grams: dict[str, Tensor] = {}
        style_factors: dict[str, float] = {}
        if style_layers:
            per_style = []
            for image in self._net_styles:
                shaped = resize(image, fit_size(image.shape[-2], image.shape[-1], max(size)))
                found = vgg.features(self._network_input(vgg.preprocess(shaped)), style_layers)
                per_style.append({name: gram_matrix(value) for name, value in found.items()})
            grams = blend_targets(per_style, self._style_weights)
            layer_total = sum(weight for _, weight in p.style_layers)
            for name, weight in p.style_layers:
                if name in grams:
                    norm = max(float(grams[name].double().square().sum()), NORM_FLOOR)
                    style_factors[name] = p.style_weight * weight / (layer_total * norm)
        return _Targets(layers, content, content_factor, grams, style_factors, p.tv_weight / 255.0**2)

    def _terms(self, variable: Tensor, targets: _Targets) -> tuple[Tensor, Tensor, Tensor]:
        """The weighted (content, style, tv) terms of `variable` (1, 3, h, w), as 0-dim tensors."""
        zero = variable.new_zeros(())
        content, style = zero, zero
        if targets.layers:
            found = self._vgg.features(self._network_input(variable), targets.layers)
            if targets.content is not None:
                content = (found[self.params.content_layer] - targets.content).square().sum() * targets.content_factor
            for name, factor in targets.style_factors.items():
                style = style + (gram_matrix(found[name]) - targets.grams[name]).square().sum() * factor
        tv = total_variation(variable) * targets.tv_factor if targets.tv_factor > 0 else zero
        return content, style, tv

    @staticmethod
    def _losses(content: Tensor, style: Tensor, tv: Tensor) -> StyleLosses:
        c, s, t = float(content), float(style), float(tv)
        return StyleLosses(c, s, t, c + s + t)

    def _take_step(self) -> StyleLosses:
        targets = self._ensure_targets()
        image = self._image
        evaluated: list[StyleLosses] = []

        def closure() -> float:
            terms = self._terms(image, targets)
            total = terms[0] + terms[1] + terms[2]
            # Gradient for the pixels only: never for VGG's weights, whatever their requires_grad says.
            objective = total * image.numel()
            (gradient,) = torch.autograd.grad(objective, image)
            image.grad = gradient.contiguous()  # channels_last when only VGG terms contribute; L-BFGS views it flat
            evaluated.append(self._losses(*(term.detach() for term in terms)))
            return float(objective.detach())

        self._optimizer.step(closure)
        return evaluated[0]


# --- state (de)serialisation ----------------------------------------------------------------


def _pack(value: Any, name: str, tensors: dict[str, Tensor]) -> Any:
    """Optimizer state value → JSON structure; each tensor goes to `tensors[name]` (a CPU copy)."""
    if isinstance(value, Tensor):
        tensors[name] = value.detach().to("cpu").clone().contiguous()
        return {"tensor": name}
    if isinstance(value, list | tuple):
        return {"list": [_pack(item, f"{name}.{i}", tensors) for i, item in enumerate(value)]}
    if value is None or isinstance(value, bool | int | float):
        return {"value": value}  # json writes floats with repr: they round-trip exactly
    raise TypeError(f"cannot save optimizer state {name} of type {type(value).__name__}")


def _unpack(structure: Any, tensors: Mapping[str, Tensor]) -> Any:
    if not isinstance(structure, dict) or len(structure) != 1:
        raise StateMismatch(f"malformed optimizer state entry {structure!r}")
    [(kind, value)] = structure.items()
    if kind == "tensor":
        if value not in tensors:
            raise StateMismatch(f"state lacks tensor {value!r}")
        return tensors[value].clone()
    if kind == "list":
        return [_unpack(item, tensors) for item in value]
    if kind == "value":
        return value
    raise StateMismatch(f"malformed optimizer state entry {structure!r}")
