"""Python arguments → the protobuf requests of the public API (shared by the sync and asyncio clients).

Only shapes and names are checked here (an unknown optimizer, an unreadable path); the limits
are the service's to check, so they are stated in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, TypeVar

import numpy as np
from PIL import Image

from genserve.client.errors import InvalidArgument
from genserve.client.images import ImageInput, image_bytes
from genserve.v1 import common_pb2, jobs_pb2, latent_pb2, text_pb2, vision_pb2

# Layers with their weights: {"relu4_1": 2.0} or ["relu4_1", ("relu5_1", 0.5)]; weight 0 = 1.
LayersInput = Mapping[str, float] | Sequence[str | tuple[str, float]]
# One style image, or several, each alone or as (image, blend weight).
StylesInput = ImageInput | Sequence[ImageInput | tuple[ImageInput, float]]
# A latent point: its vector (list or numpy array), or an image to encode (VAE).
PointInput = ImageInput | Sequence[float] | np.ndarray


class GenerateOptions(TypedDict, total=False):
    """Options of `generate` / `generate_stream`; unset ones take the service defaults (see text.proto)."""

    model: str
    max_tokens: int
    temperature: float  # 0 = greedy; 0..5
    top_k: int
    top_p: float
    min_p: float
    repetition_penalty: float
    presence_penalty: float
    frequency_penalty: float
    seed: int
    stop: Sequence[str]
    n: int
    logprobs: bool
    top_logprobs: int
    temperatures: Sequence[float]  # a sweep: n completions per temperature


class DreamOptions(TypedDict, total=False):
    """Options of `dream`; unset ones take the service defaults (see vision.proto)."""

    backbone: str  # "efficientnet-lite0" (default) or "vgg16"
    layers: LayersInput
    octaves: int
    octave_scale: float
    steps_per_octave: int
    step_size: float
    max_loss: float
    jitter: int
    guide: ImageInput
    seed: int
    preview_every: int
    max_size: int


class StyleOptions(TypedDict, total=False):
    """Options of a style transfer (`style_preview`, `submit_style_transfer`); see vision.proto."""

    content_layer: str
    style_layers: LayersInput
    content_weight: float
    style_weight: float
    tv_weight: float
    optimizer: str  # "lbfgs" (default) or "adam"
    learning_rate: float
    init: str  # "content" (default), "style" or "noise"
    color: str  # "none" (default), "luminance" or "histogram"
    iterations: int
    max_size: int
    scales: int
    preview_every: int
    seed: int


def choice(enum: Any, prefix: str, value: str, name: str) -> Any:
    """A lower-case name ("adam") → its proto enum value (STYLE_OPTIMIZER_ADAM); "" = unspecified."""
    if not value:
        return 0
    names = [key.removeprefix(prefix).lower() for key in enum.keys() if not key.endswith("_UNSPECIFIED")]  # noqa: SIM118 (an enum wrapper, not a dict)
    if value not in names:
        raise InvalidArgument(f"{name} {value!r}: choose from {', '.join(names)}")
    return enum.Value(prefix + value.upper())


def image(value: ImageInput, field: str = "image") -> common_pb2.Image:
    return common_pb2.Image(data=image_bytes(value, field))


def layer_weights(layers: LayersInput | None) -> list[common_pb2.LayerWeight]:
    if layers is None:
        return []
    items = layers.items() if isinstance(layers, Mapping) else layers
    weighted = [(item, 0.0) if isinstance(item, str) else item for item in items]
    return [common_pb2.LayerWeight(layer=name, weight=weight) for name, weight in weighted]


Message = TypeVar("Message")


def _message(
    kind: type[Message], options: Mapping[str, Any], plain: Sequence[str], given: Sequence[str] = (), **converted: Any
) -> Message:
    """A `kind` protobuf with the `converted` fields; the `plain` fields `options` has (absent ones
    keep the protobuf default, 0 / "" / false, which the service reads as its own default); and
    the optional (presence-tracked) `given` fields, set when not None, so 0.0 is sent as a value."""
    fields = {name: options[name] for name in plain if name in options}
    try:
        message = kind(**converted, **fields)
    except (ValueError, TypeError):
        # Name the field, as the service would: a bad value is found here only when protobuf cannot hold it.
        for name, value in fields.items():
            _check_holds(kind, name, value)
        raise
    for name in given:
        if options.get(name) is not None:
            _check_holds(kind, name, options[name])
            setattr(message, name, options[name])
    return message


def _check_holds(kind: type[Any], name: str, value: Any) -> None:
    """InvalidArgument naming `name` when a `kind` field cannot hold `value` (-1 in an unsigned seed,
    2**40 in an int32, text in a number)."""
    try:
        kind(**{name: value})
    except (ValueError, TypeError) as error:
        raise InvalidArgument(f"{name} cannot be {value!r}: {error}") from None


def generate_request(prompt: str, options: GenerateOptions) -> text_pb2.GenerateRequest:
    plain_sampling = ("top_k", "min_p", "presence_penalty", "frequency_penalty")
    sampling = _message(
        text_pb2.SamplingParams, options, plain_sampling, ("temperature", "top_p", "repetition_penalty")
    )
    plain = ("model", "max_tokens", "stop", "n", "logprobs", "top_logprobs", "temperatures")
    return _message(text_pb2.GenerateRequest, options, plain, ("seed",), prompt=prompt, sampling=sampling)


def dream_request(photo: ImageInput, options: DreamOptions) -> vision_pb2.DreamRequest:
    plain = (
        "backbone",
        "octaves",
        "octave_scale",
        "steps_per_octave",
        "step_size",
        "jitter",
        "preview_every",
        "max_size",
    )
    layers = layer_weights(options.get("layers"))
    request = _message(vision_pb2.DreamRequest, options, plain, ("max_loss", "seed"), image=image(photo), layers=layers)
    if options.get("guide") is not None:
        request.guide.CopyFrom(image(options["guide"], "guide"))
    return request


def _style_images(styles: StylesInput) -> list[vision_pb2.StyleImage]:
    single = isinstance(styles, bytes | bytearray | memoryview | str | Image.Image) or hasattr(styles, "__fspath__")
    items: Sequence[Any] = [styles] if single else styles  # type: ignore[assignment]
    if not items:
        raise InvalidArgument("styles: give at least one style image")
    blended = [item if isinstance(item, tuple) else (item, 0.0) for item in items]
    return [
        vision_pb2.StyleImage(image=image(picture, f"styles[{index}]"), weight=weight)
        for index, (picture, weight) in enumerate(blended)
    ]


def style_transfer_request(
    content: ImageInput, styles: StylesInput, options: StyleOptions
) -> vision_pb2.StyleTransferRequest:
    """A weight left unset stays unset (the service default); 0.0 is sent (e.g. pure texture)."""
    enums = {
        "optimizer": choice(vision_pb2.StyleOptimizer, "STYLE_OPTIMIZER_", options.get("optimizer", ""), "optimizer"),
        "init": choice(vision_pb2.StyleInit, "STYLE_INIT_", options.get("init", ""), "init"),
        "color": choice(vision_pb2.ColorPreservation, "COLOR_PRESERVATION_", options.get("color", ""), "color"),
    }
    plain = ("content_layer", "learning_rate", "iterations", "max_size", "scales", "preview_every")
    weights = ("content_weight", "style_weight", "tv_weight")
    style_layers = layer_weights(options.get("style_layers"))
    params = _message(vision_pb2.StyleParams, options, plain, weights, style_layers=style_layers, **enums)
    content_image, style_images = image(content, "content"), _style_images(styles)
    message = vision_pb2.StyleTransferRequest
    return _message(message, options, (), ("seed",), content=content_image, styles=style_images, params=params)


def submit_request(
    content: ImageInput, styles: StylesInput, options: StyleOptions, idempotency_key: str
) -> jobs_pb2.SubmitStyleTransferRequest:
    return jobs_pb2.SubmitStyleTransferRequest(
        request=style_transfer_request(content, styles, options), idempotency_key=idempotency_key
    )


def job_state(state: str) -> Any:
    """ "running" → JOB_STATE_RUNNING; "" = any state."""
    return choice(jobs_pb2.JobState, "JOB_STATE_", state, "state")


def vector(values: Sequence[float] | np.ndarray) -> latent_pb2.LatentVector:
    return latent_pb2.LatentVector(values=np.asarray(values, dtype=np.float32).reshape(-1).tolist())


def vectors(points: Sequence[Sequence[float]] | np.ndarray) -> list[latent_pb2.LatentVector]:
    """Rows of a (count, dim) array (or a list of lists) → LatentVector messages."""
    array = np.asarray(points, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    return [vector(row) for row in array]


def point(value: PointInput, field: str) -> latent_pb2.LatentPoint:
    """A vector (list/tuple of numbers or numpy array) or an image (bytes, path, PIL image)."""
    if isinstance(value, np.ndarray) or (isinstance(value, list | tuple) and not isinstance(value, str)):
        return latent_pb2.LatentPoint(vector=vector(value))
    return latent_pb2.LatentPoint(image=image(value, field))  # type: ignore[arg-type]


def interpolation_method(method: str) -> Any:
    return choice(latent_pb2.InterpolationMethod, "INTERPOLATION_METHOD_", method, "method")
