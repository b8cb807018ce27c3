"""The vision service's domain layer: DeepDream and interactive style transfer, no protobuf.

Requests are validated and their images decoded (with the pixel limits) before they take a
slot; the optimisation runs on the runner's torch thread and streams progress, previews and
the result back. Cancelling or a passed deadline stops the work at its next step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import torch

from genserve.common.config import ImageSettings, VisionSettings
from genserve.common.errors import InvalidArgument
from genserve.common.images import EncodedImage, ImageLimits, decode_image, fit_within, png_image, to_tensor
from genserve.common.seeds import fresh_seed
from genserve.common.style_request import StyleRequest, check_preview_every
from genserve.vision.backbones import Backbone, VGG16Features
from genserve.vision.dream import DreamParams, DreamProgress, dream, validate
from genserve.vision.runner import Emit, TorchRunner, check_cancelled
from genserve.vision.style import StyleTransfer
from genserve.vision.style_progress import StyleProgress


@dataclass(frozen=True)
class DreamInput:
    image: bytes
    params: DreamParams  # seed filled in by the service
    backbone: str = ""  # empty = the default backbone
    guide: bytes = b""
    seed: int | None = None
    preview_every: int = 0
    max_size: int = 0  # 0 = the service default


@dataclass(frozen=True)
class DreamUpdate:
    progress: DreamProgress | None = None
    preview: EncodedImage | None = None
    result: EncodedImage | None = None
    seed: int = 0


@dataclass(frozen=True)
class StyleUpdate:
    progress: StyleProgress | None = None
    preview: EncodedImage | None = None
    result: EncodedImage | None = None
    seed: int = 0


@dataclass
class VisionModels:
    backbones: dict[str, Backbone]  # by model name
    default_backbone: str
    devices: dict[str, str] = field(default_factory=dict)

    @property
    def vgg(self) -> VGG16Features:
        model = self.backbones.get("vgg16")
        if not isinstance(model, VGG16Features):
            raise InvalidArgument("style transfer needs the vgg16 model, which this service has not loaded")
        return model


class VisionOperations:
    def __init__(
        self, settings: VisionSettings, images: ImageSettings, models: VisionModels, runner: TorchRunner
    ) -> None:
        self.settings = settings
        self.limits = ImageLimits(images.max_image_pixels, images.max_image_bytes)
        self.models = models
        self.runner = runner

    def backbone(self, name: str) -> tuple[str, Backbone]:
        chosen = name or self.models.default_backbone
        model = self.models.backbones.get(chosen)
        if model is None:
            valid = ", ".join(sorted(self.models.backbones))
            raise InvalidArgument(f"backbone {chosen!r} is not one of: {valid}")
        return chosen, model

    async def _decode(self, data: bytes, field_name: str) -> torch.Tensor:
        image = await asyncio.to_thread(decode_image, data, field_name, self.limits)
        return to_tensor(image)

    async def _decode_within(self, data: bytes, field_name: str, max_side: int) -> torch.Tensor:
        def work() -> torch.Tensor:
            return to_tensor(fit_within(decode_image(data, field_name, self.limits), max_side))

        return await asyncio.to_thread(work)

    # --- DeepDream ------------------------------------------------------------------------

    async def dream(self, request: DreamInput) -> AsyncIterator[DreamUpdate]:
        name, backbone = self.backbone(request.backbone)
        seed = request.seed if request.seed is not None else fresh_seed()
        params = validate(DreamParams(**{**request.params.__dict__, "seed": seed}), name, backbone.layer_names)
        preview_every = check_preview_every(request.preview_every)
        limit = self.settings.dream_max_size
        max_size = request.max_size or limit
        if not 16 <= max_size <= limit:
            raise InvalidArgument(f"max_size must be in [16, {limit}] (0 = {limit}), got {request.max_size}")
        image = await self._decode_within(request.image, "image", max_size)
        guide = await self._decode_within(request.guide, "guide", max_size) if request.guide else None

        def work(emit: Emit, cancel: threading.Event) -> None:
            def on_step(progress: DreamProgress, current: Callable[[], torch.Tensor]) -> None:
                check_cancelled(cancel)
                preview = None
                if preview_every and progress.steps_done % preview_every == 0:
                    preview = png_image(current())
                emit(DreamUpdate(progress=progress, preview=preview, seed=seed))

            result = dream(backbone, image, params, guide, on_step)
            emit(DreamUpdate(result=png_image(result), seed=seed))

        async for update in self.runner.stream(work):
            assert isinstance(update, DreamUpdate)
            yield update

    # --- style transfer preview -------------------------------------------------------------

    async def style_preview(self, request: StyleRequest) -> AsyncIterator[StyleUpdate]:
        """Run a checked request (`parse_style_request` with the preview caps), streaming its progress."""
        vgg = self.models.vgg
        params, preview_every, seed = request.params, request.preview_every, request.params.seed
        content = await self._decode(request.content, "content")
        styles = [
            (await self._decode(image, f"styles[{i}].image"), weight)
            for i, (image, weight) in enumerate(request.styles)
        ]

        def work(emit: Emit, cancel: threading.Event) -> None:
            engine = StyleTransfer(vgg, content, styles, params)

            def on_step(progress: StyleProgress) -> None:
                check_cancelled(cancel)
                preview = None
                if preview_every and progress.step % preview_every == 0:
                    preview = png_image(engine.current_image())
                emit(StyleUpdate(progress=progress, preview=preview, seed=seed))

            result = engine.run(on_step)
            emit(StyleUpdate(result=png_image(result), seed=seed))

        async for update in self.runner.stream(work):
            assert isinstance(update, StyleUpdate)
            yield update
