"""The latent service's domain layer: sampling, encoding, decoding, walks, grids, arithmetic and concepts.

No protobuf here. Every torch call runs on the service's one torch thread; decodes go through
the batcher, so concurrent requests share forward passes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from genserve.common.config import LatentSettings
from genserve.common.errors import InvalidArgument, NotFound
from genserve.common.images import EncodedImage, ImageLimits, png_image
from genserve.common.model_store import ModelEntry
from genserve.common.seeds import fresh_seed
from genserve.latent.batcher import DecodeBatcher
from genserve.latent.concepts import MAX_DESCRIPTION, ConceptVector, UserConcepts, check_name
from genserve.latent.geometry import lerp, manifold_points, sample_prior, slerp, tile
from genserve.latent.inputs import to_model_input

MAX_TEMPERATURE = 3.0
TRUNCATION_RANGE = (0.1, 5.0)
MAX_STRENGTH = 5.0
DEFAULT_STRENGTHS = (-2.0, -1.0, 0.0, 1.0, 2.0)
DEFAULT_STEPS = 8
DEFAULT_GRID, MAX_GRID = 15, 30
DEFAULT_QUANTILE = 0.05


@dataclass
class LatentModel:
    name: str
    entry: ModelEntry
    network: Any  # genserve.latent.models.VAE or Generator: decode(z), and encode(x) for a VAE
    device: torch.device
    builtin: dict[str, ConceptVector]

    @property
    def kind(self) -> str:
        return str(self.network.kind)

    @property
    def latent_dim(self) -> int:
        return int(self.network.latent_dim)


@dataclass(frozen=True)
class PointInput:
    """A latent point as a vector, or an image to encode (exactly one is set)."""

    vector: Sequence[float] | None = None
    image: bytes | None = None


class LatentOperations:
    def __init__(
        self,
        settings: LatentSettings,
        limits: ImageLimits,
        models: dict[str, LatentModel],
        default: str,
        executor: ThreadPoolExecutor,
        concepts: UserConcepts,
        on_batch: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.models = models
        self.default = default
        self.executor = executor
        self.concepts = concepts
        self.batcher: DecodeBatcher[EncodedImage] = DecodeBatcher(
            self._decode_pngs,
            executor,
            settings.max_batch,
            settings.max_wait_ms / 1000.0,
            enabled=settings.batching,
            on_batch=on_batch,
        )

    # --- checks ---------------------------------------------------------------------------

    def model(self, name: str) -> LatentModel:
        chosen = name or self.default
        if chosen not in self.models:
            raise NotFound(f"latent model {chosen!r} is not loaded; models: {', '.join(sorted(self.models))}")
        return self.models[chosen]

    def _count(self, field: str, count: int, low: int = 1) -> int:
        cap = self.settings.max_images
        if not low <= count <= cap:
            raise InvalidArgument(f"{field} must be in [{low}, {cap}] (GENSERVE_LATENT_MAX_IMAGES), got {count}")
        return count

    @staticmethod
    def _vector(model: LatentModel, values: Sequence[float], field: str) -> torch.Tensor:
        if len(values) != model.latent_dim:
            raise InvalidArgument(
                f"{field} has {len(values)} components; {model.name} has a {model.latent_dim}-d latent space"
            )
        vector = torch.tensor(list(values), dtype=torch.float32)
        bad = (~torch.isfinite(vector)).nonzero()
        if bad.numel():
            index = int(bad[0, 0])
            raise InvalidArgument(f"{field}[{index}] must be finite, got {float(vector[index])}")
        return vector

    def _vectors(self, model: LatentModel, vectors: Sequence[Sequence[float]], field: str) -> torch.Tensor:
        self._count(f"{field} count", len(vectors))
        return torch.stack([self._vector(model, v, f"{field}[{i}]") for i, v in enumerate(vectors)])

    def _encoder(self, model: LatentModel, field: str) -> Any:
        if model.kind != "vae":
            raise InvalidArgument(
                f"{field}: {model.name} is a {model.kind.upper()} and has no encoder; give latent vectors, "
                f"or use a VAE ({', '.join(sorted(n for n, m in self.models.items() if m.kind == 'vae'))})"
            )
        return model.network

    async def _encode(
        self, model: LatentModel, images: Sequence[bytes], field: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self._encoder(model, field)

        def work() -> tuple[torch.Tensor, torch.Tensor]:
            batch = torch.stack([to_model_input(data, f"{field}[{i}]", self.limits) for i, data in enumerate(images)])
            with torch.inference_mode():
                mean, log_variance = encoder.encode(batch.to(model.device, torch.float64))
            return mean.float().cpu(), log_variance.float().cpu()

        return await asyncio.get_running_loop().run_in_executor(self.executor, work)

    async def _point(self, model: LatentModel, point: PointInput, field: str) -> torch.Tensor:
        if point.vector is not None:
            return self._vector(model, point.vector, f"{field}.vector")
        if point.image is not None:
            mean, _ = await self._encode(model, [point.image], f"{field}.image")
            return mean[0]
        raise InvalidArgument(f"{field} must be a latent vector or an image")

    def _decode_pngs(self, name: str, z: torch.Tensor) -> list[EncodedImage]:
        """On the torch thread: decode stacked points and encode each image as PNG."""
        model = self.models[name]
        with torch.inference_mode():
            images = model.network.decode(z.to(model.device, torch.float64)).float().cpu()
        return [png_image(image) for image in images]

    async def _decode(self, model: LatentModel, z: torch.Tensor) -> list[EncodedImage]:
        return await self.batcher.decode(model.name, z)

    # --- the operations -------------------------------------------------------------------

    async def sample(
        self, name: str, n: int, seed: int | None, temperature: float | None, truncation: float
    ) -> tuple[LatentModel, list[EncodedImage], torch.Tensor, int]:
        model, z, used = self.sample_points(name, n, seed, temperature, truncation)
        return model, await self._decode(model, z), z, used

    def sample_points(
        self, name: str, n: int, seed: int | None, temperature: float | None, truncation: float
    ) -> tuple[LatentModel, torch.Tensor, int]:
        """Sample's checks and its points from the prior, (n, dim) float32, with the seed used.

        Also the TorchServe handler's (genserve.torchserve), which decodes them in its own batch."""
        model = self.model(name)
        count = self._count("n", n or 1)
        scale = 1.0 if temperature is None else temperature
        if not (math.isfinite(scale) and 0 < scale <= MAX_TEMPERATURE):
            raise InvalidArgument(f"temperature must be in (0, {MAX_TEMPERATURE:g}], got {scale}")
        low, high = TRUNCATION_RANGE
        if truncation != 0 and not (math.isfinite(truncation) and low <= truncation <= high):
            raise InvalidArgument(f"truncation must be 0 (off) or in [{low:g}, {high:g}], got {truncation}")
        used = fresh_seed() if seed is None else seed
        return model, sample_prior(count, model.latent_dim, used, scale, truncation), used

    async def encode(self, name: str, images: Sequence[bytes]) -> tuple[LatentModel, torch.Tensor, torch.Tensor]:
        model = self.model(name)
        self._count("images count", len(images))
        mean, log_variance = await self._encode(model, images, "images")
        return model, mean, log_variance

    async def decode(self, name: str, vectors: Sequence[Sequence[float]]) -> tuple[LatentModel, list[EncodedImage]]:
        model, z = self.decode_points(name, vectors)
        return model, await self._decode(model, z)

    def decode_points(self, name: str, vectors: Sequence[Sequence[float]]) -> tuple[LatentModel, torch.Tensor]:
        """Decode's checks: the model and the given points as (n, dim) float32."""
        model = self.model(name)
        return model, self._vectors(model, vectors, "latents")

    def decode_images(self, name: str, z: torch.Tensor) -> list[EncodedImage]:
        """Points of one model to PNG images in one forward pass, on the calling thread."""
        return self._decode_pngs(name, z)

    async def interpolate(
        self, name: str, start: PointInput, end: PointInput, steps: int, method: str
    ) -> tuple[LatentModel, list[EncodedImage], torch.Tensor]:
        model = self.model(name)
        frames = self._count("steps", steps or DEFAULT_STEPS, low=2)
        a, b = await self._point(model, start, "start"), await self._point(model, end, "end")
        z = (slerp if method == "slerp" else lerp)(a, b, frames)
        return model, await self._decode(model, z), z

    async def manifold(self, name: str, grid_size: int, quantile: float) -> tuple[LatentModel, EncodedImage, int]:
        model = self.model(name)
        if model.latent_dim != 2:
            raise InvalidArgument(
                f"{model.name} has a {model.latent_dim}-d latent space; the manifold needs a 2-d model"
            )
        size = grid_size or DEFAULT_GRID
        if not 2 <= size <= MAX_GRID:
            raise InvalidArgument(f"grid_size must be in [2, {MAX_GRID}] (0 = {DEFAULT_GRID}), got {grid_size}")
        q = quantile or DEFAULT_QUANTILE
        if not (math.isfinite(q) and 0 < q < 0.5):
            raise InvalidArgument(f"quantile must be in (0, 0.5) (0 = {DEFAULT_QUANTILE}), got {quantile}")
        points = manifold_points(size, q)

        def work() -> EncodedImage:
            with torch.inference_mode():
                images = model.network.decode(points.to(model.device, torch.float64)).float().cpu()
            return png_image(tile(images, size))

        return model, await asyncio.get_running_loop().run_in_executor(self.executor, work), size

    async def arithmetic(
        self, name: str, a: PointInput, b: PointInput, c: PointInput
    ) -> tuple[LatentModel, list[EncodedImage], torch.Tensor]:
        model = self.model(name)
        z = (await self._point(model, a, "a") - await self._point(model, b, "b") + await self._point(model, c, "c"))[
            None
        ]
        return model, await self._decode(model, z), z

    # --- concepts ---------------------------------------------------------------------------

    async def concept(self, owner: str, model: LatentModel, name: str) -> ConceptVector:
        found = model.builtin.get(name) or await self.concepts.get(owner, model.name, name)
        if found is None:
            names = sorted(model.builtin) + [c.name for c in await self.concepts.list(owner, model.name)]
            raise NotFound(f"concept {name!r} not found for {model.name}; concepts: {', '.join(names) or 'none'}")
        return found

    async def create_concept(
        self, owner: str, name: str, model_name: str, description: str, positives: Sequence[bytes],
        negatives: Sequence[bytes],
    ) -> ConceptVector:  # fmt: skip
        model = self.model(model_name)
        check_name(name)
        if name in model.builtin:
            raise InvalidArgument(f"{name!r} is a built-in concept of {model.name}; choose another name")
        if len(description) > MAX_DESCRIPTION:
            raise InvalidArgument(f"description must be at most {MAX_DESCRIPTION} characters, got {len(description)}")
        self._count("positives count", len(positives))
        self._count("negatives count", len(negatives))
        positive_mean, _ = await self._encode(model, positives, "positives")
        negative_mean, _ = await self._encode(model, negatives, "negatives")
        vector = positive_mean.mean(0) - negative_mean.mean(0)
        concept = ConceptVector(name, model.name, "user", description, vector, len(positives), len(negatives))
        await self.concepts.put(owner, concept)
        return concept

    async def list_concepts(self, owner: str, name: str) -> list[ConceptVector]:
        model = self.model(name)
        return [*sorted(model.builtin.values(), key=lambda c: c.name), *await self.concepts.list(owner, model.name)]

    async def delete_concept(self, owner: str, model_name: str, name: str) -> ConceptVector:
        model = self.model(model_name)
        if name in model.builtin:
            raise InvalidArgument(f"{name!r} is a built-in concept of {model.name} and cannot be deleted")
        return await self.concepts.delete(owner, model.name, name)

    async def apply_concept(
        self, owner: str, model_name: str, concept_name: str, point: PointInput, strengths: Sequence[float]
    ) -> tuple[LatentModel, list[EncodedImage], torch.Tensor]:
        model = self.model(model_name)
        concept = await self.concept(owner, model, concept_name)
        chosen = list(strengths) or list(DEFAULT_STRENGTHS)
        self._count("strengths count", len(chosen))
        for i, strength in enumerate(chosen):
            if not (math.isfinite(strength) and -MAX_STRENGTH <= strength <= MAX_STRENGTH):
                raise InvalidArgument(
                    f"strengths[{i}] must be in [-{MAX_STRENGTH:g}, {MAX_STRENGTH:g}], got {strength}"
                )
        base = await self._point(model, point, "point")
        z = base[None] + torch.tensor(chosen, dtype=torch.float32)[:, None] * concept.vector[None]
        return model, await self._decode(model, z), z
