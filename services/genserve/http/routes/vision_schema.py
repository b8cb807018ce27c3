"""Request and answer models of the vision routes (dream, style preview) and of style-transfer
jobs, which take the same options.

Options are named as in the client's `DreamOptions` / `StyleOptions`; unset ones are not sent,
so the service applies its defaults and its limits (which it states in its messages).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from genserve.client import DreamProgress, StyleProgress
from genserve.client.requests import DreamOptions, StyleOptions
from genserve.http.bodies import FormShape
from genserve.http.errors import ApiError, FieldNames
from genserve.http.schemas import ImageData, ImageOut, image_out

# A layer list: {"relu4_1": 2.0, "relu5_1": 0.5} (weights; 0 = 1) or ["relu4_1", "relu5_1"].
Layers = dict[str, float] | list[str]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def given(self, *skipped: str) -> dict[str, Any]:
        """The options the client set, as keyword arguments of the client's call."""
        return self.model_dump(exclude_none=True, exclude=set(skipped))


class DreamRequest(Options):
    """A DeepDream of one image. Unset options take the service's defaults."""

    image: ImageData = Field(description="The photo to dream on (a file part `image` in a form).")
    backbone: str | None = Field(None, description='"efficientnet-lite0" (the default) or "vgg16".')
    layers: Layers | None = Field(
        None,
        description='Layers whose activations are amplified: {"layer": weight, ...} (weight 0 = 1) or a list of '
        "names; the backbone's defaults when unset. GET /v1/models/{model} lists a backbone's layers.",
    )
    octaves: int | None = Field(None, description="Scales the image is dreamt at, coarsest first.")
    octave_scale: float | None = Field(None, description="Size ratio between octaves (> 1).")
    steps_per_octave: int | None = Field(None, description="Gradient-ascent steps at each octave.")
    step_size: float | None = Field(None, description="Step size of the normalised gradient ascent.")
    max_loss: float | None = Field(None, description="Stop an octave early once the objective passes this.")
    jitter: int | None = Field(None, description="Random shift in pixels before each step (0 = none).")
    guide: ImageData | None = Field(
        None, description="A guide image: features are pushed towards its features instead (a file part in a form)."
    )
    seed: int | None = Field(None, description="The same seed and options give the same dream; unset = random.")
    preview_every: int | None = Field(
        None, description="With Accept: text/event-stream, a preview image every this many steps (0 = none)."
    )
    max_size: int | None = Field(None, description="Longest side of the dream in pixels (the service caps it).")

    def options(self) -> DreamOptions:
        return DreamOptions(**self.given("image"))  # type: ignore[typeddict-item]


DREAM_FORM = FormShape(images=frozenset({"image", "guide"}), structured=frozenset({"layers"}))


class StyleRequest(Options):
    """A style transfer: the content image painted in the style of one or more style images."""

    content: ImageData = Field(description="The content image (a file part `content` in a form).")
    styles: list[ImageData] = Field(description="One or more style images (in a form: one file part `style` for each).")
    style_weights: list[float] | None = Field(
        None, description="Blend weight of each style image, one per style (0 = 1); unset = equal weights."
    )
    content_layer: str | None = Field(None, description="VGG16 layer of the content term.")
    style_layers: Layers | None = Field(
        None, description='VGG16 layers of the style term: {"layer": weight, ...} (0 = 1) or a list of names.'
    )
    content_weight: float | None = Field(None, description="Weight of the content term (0 = pure texture).")
    style_weight: float | None = Field(None, description="Weight of the style term.")
    tv_weight: float | None = Field(None, description="Weight of the total-variation (smoothness) term.")
    optimizer: str | None = Field(None, description='"lbfgs" (the default) or "adam".')
    learning_rate: float | None = Field(None, description="Adam's learning rate.")
    init: str | None = Field(None, description='The starting image: "content" (the default), "style" or "noise".')
    color: str | None = Field(None, description='Colour preservation: "none" (the default), "luminance", "histogram".')
    iterations: int | None = Field(None, description="Optimisation steps in all.")
    max_size: int | None = Field(None, description="Longest side of the result in pixels (the service caps it).")
    scales: int | None = Field(None, description="Coarse-to-fine scales the steps are split over.")
    preview_every: int | None = Field(None, description="A preview image every this many steps (0 = none).")
    seed: int | None = Field(None, description="The same seed and options give the same image; unset = random.")

    def styles_input(self) -> list[tuple[bytes, float]] | list[bytes]:
        """The style images as the client takes them: with their weights when given."""
        if self.style_weights is None:
            return list(self.styles)
        if len(self.style_weights) != len(self.styles):
            # The gRPC API pairs each style with its weight; here they come as two lists.
            counts = f"{len(self.style_weights)} weights for {len(self.styles)} styles"
            message = f"style_weights has {counts}; give one per style"
            raise ApiError(400, message, param="style_weights", code="invalid_argument")
        return list(zip(self.styles, self.style_weights, strict=True))

    def options(self) -> StyleOptions:
        return StyleOptions(**self.given("content", "styles", "style_weights"))  # type: ignore[typeddict-item]


STYLE_FORM = FormShape(
    files={"style": "styles"},
    images=frozenset({"content", "styles"}),
    lists=frozenset({"styles"}),
    structured=frozenset({"style_weights", "style_layers"}),
)


def field_names(model: type[BaseModel], shape: FormShape, form: bool) -> FieldNames:
    """Every field under its own name (its form part's in a form), the images' and weights'
    gRPC paths ("styles[1].image", "styles[1].weight") mapped to the route's."""
    aliases = {name: shape.form_name(name) if form else name for name in model.model_fields}
    if "styles" in model.model_fields:
        aliases |= {"styles.image": aliases["styles"], "styles.weight": "style_weights"}
    return FieldNames(aliases)


class ImageAnswer(BaseModel):
    """The finished image (the JSON answer, and the `result` event of a stream)."""

    image: ImageOut = Field(description="The result image.")
    seed: int = Field(description="The seed it was made with: send it back to repeat it.")


class DreamProgressEvent(BaseModel):
    """A `progress` event of a dream stream."""

    octave: int = Field(description="Octave of this step, 0 = the coarsest.")
    step: int = Field(description="Step within the octave, from 1.")
    steps_done: int = Field(description="Steps done over all octaves.")
    total_steps: int = Field(description="Steps planned over all octaves (an octave may stop early at max_loss).")
    loss: float = Field(description="The objective at this step.")
    elapsed_seconds: float = Field(description="Seconds since the dream started.")
    seed: int = Field(description="The seed in use.")
    preview: ImageOut | None = Field(None, description="The image so far, every preview_every steps.")


class StyleLossesOut(BaseModel):
    """The loss terms at one step, already multiplied by their weights."""

    content: float = Field(description="The content term.")
    style: float = Field(description="The style term.")
    tv: float = Field(description="The total-variation term.")
    total: float = Field(description="Their sum, the loss minimised.")


class StyleProgressEvent(BaseModel):
    """A `progress` event of a style-preview stream."""

    step: int = Field(description="Steps done, from 1.")
    total_steps: int = Field(description="Steps planned.")
    losses: StyleLossesOut | None = Field(None, description="The loss terms at this step.")
    elapsed_seconds: float = Field(description="Seconds since the transfer started.")
    seed: int = Field(description="The seed in use.")
    preview: ImageOut | None = Field(None, description="The image so far, every preview_every steps.")


def losses_out(losses: Any) -> StyleLossesOut | None:
    if losses is None:
        return None
    return StyleLossesOut(content=losses.content, style=losses.style, tv=losses.tv, total=losses.total)


def dream_event(progress: DreamProgress) -> DreamProgressEvent:
    return DreamProgressEvent(
        octave=progress.octave,
        step=progress.step,
        steps_done=progress.steps_done,
        total_steps=progress.total_steps,
        loss=progress.loss,
        elapsed_seconds=progress.elapsed_seconds,
        seed=progress.seed,
        preview=image_out(progress.preview) if progress.preview is not None else None,
    )


def style_event(progress: StyleProgress) -> StyleProgressEvent:
    return StyleProgressEvent(
        step=progress.step,
        total_steps=progress.total_steps,
        losses=losses_out(progress.losses),
        elapsed_seconds=progress.elapsed_seconds,
        seed=progress.seed,
        preview=image_out(progress.preview) if progress.preview is not None else None,
    )
