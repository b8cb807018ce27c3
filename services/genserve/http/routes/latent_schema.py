"""Request and answer models of the latent routes: JSON in, images out as base64 PNGs beside the
latent vectors (lists of floats) the RPCs return.

A latent point is given as its vector (a list of numbers) or as an image to encode (a base64
string; VAE models), as the gRPC API's LatentPoint is.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from genserve.client import Concept, Encodings, LatentImages, Manifold
from genserve.http.errors import FieldNames
from genserve.http.schemas import ImageData, ImageOut, image_out

Point = list[float] | ImageData
POINT = "A latent vector (a list of numbers, the model's latent dimension), or an image to encode (base64; VAE only)."
MODEL = "A latent model from GET /v1/models?family=latent; empty = the service's default."

# gRPC names → this API's. A point's vector and image are both the point here; a NOT_FOUND is
# about the model or about a concept, whichever the message names.
_POINTS = ("start", "end", "a", "b", "c", "point")
LATENT_FIELDS = FieldNames(
    {
        **{name: name for name in ("model", "n", "seed", "temperature", "truncation", "images", "latents")},
        **{name: name for name in ("steps", "method", "grid_size", "quantile", "description", "strengths")},
        **{name: name for name in ("positives", "negatives")},
        **{f"{point}.{member}": point for point in _POINTS for member in ("vector", "image")},
        **{f"{point}.image[0]": point for point in _POINTS},
    },
    not_found_cases=(("latent model", "model", "model_not_found"), ("concept", "name", "concept_not_found")),
)


class LatentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("", description=MODEL)


class SampleRequest(LatentRequest):
    n: int = Field(1, description="Images to draw (the service caps it: GENSERVE_LATENT_MAX_IMAGES).")
    seed: int | None = Field(None, description="The same seed gives the same images; unset = random.")
    temperature: float | None = Field(None, description="Scale of the prior's standard deviation; unset = 1.")
    truncation: float = Field(0.0, description="Truncation trick: redraw components with |z| above it; 0 = off.")
    return_latents: bool = Field(False, description="Also return the latent vector behind each image.")


class EncodeRequest(LatentRequest):
    images: list[ImageData] = Field(description="Images to encode (base64), any size and colour.")


class DecodeRequest(LatentRequest):
    latents: list[list[float]] = Field(description="Latent vectors to decode, one image each.")


class InterpolateRequest(LatentRequest):
    start: Point = Field(description=POINT)
    end: Point = Field(description=POINT)
    steps: int = Field(0, description="Frames including both ends; 0 = 8.")
    method: str = Field("", description='"slerp" (the default) or "lerp".')


class ManifoldRequest(LatentRequest):
    grid_size: int = Field(0, description="Tiles per side; 0 = 15.")
    quantile: float = Field(0.0, description="The grid spans the prior's quantiles [q, 1 − q]; 0 = 0.05.")


class ArithmeticRequest(LatentRequest):
    a: Point = Field(description=POINT)
    b: Point = Field(description=POINT)
    c: Point = Field(description=POINT)


class CreateConceptRequest(LatentRequest):
    name: str = Field(description="1 to 64 of [a-z0-9_-], not a built-in concept's name.")
    description: str = Field("", description="What the concept is.")
    positives: list[ImageData] = Field(description="Images that have the concept (base64).")
    negatives: list[ImageData] = Field(description="Images that lack it (base64).")


class ApplyConceptRequest(LatentRequest):
    point: Point = Field(description=POINT)
    strengths: list[float] = Field(
        default_factory=list, description="One image per strength: point + strength × concept; empty = -2..2."
    )


class LatentImagesOut(BaseModel):
    """Images from the latent service, in request order."""

    model: str = Field(description="The model that served the request.")
    images: list[ImageOut] = Field(description="The images (PNG, base64).")
    latents: list[list[float]] | None = Field(
        None, description="The latent vector behind each image, where the call returns them."
    )
    seed: int | None = Field(None, description="The seed used (sample): send it back to repeat the images.")


class EncodingsOut(BaseModel):
    """The posterior of each image."""

    model: str = Field(description="The model that served the request.")
    means: list[list[float]] = Field(description="The posterior mean of each image: its latent point.")
    log_variances: list[list[float]] = Field(description="The posterior log-variance of each image.")


class ManifoldOut(BaseModel):
    """The decoded grid over a 2-d latent space, as one image."""

    model: str = Field(description="The model that served the request.")
    images: list[ImageOut] = Field(description="One image: every tile, row-major, grid_size per side.")
    grid_size: int = Field(description="Tiles per side.")


class ConceptOut(BaseModel):
    """A concept vector of a latent model."""

    name: str = Field(description="The concept's name, unique per model.")
    model: str = Field(description="The latent model it belongs to.")
    source: str = Field(description='"label", "attribute" (built-in) or "user" (the caller\'s own).')
    description: str = Field(description="What the concept is.")
    norm: float = Field(description="The vector's Euclidean norm.")
    positives: int = Field(description="Examples with the concept it was built from (user concepts).")
    negatives: int = Field(description="Examples without it (user concepts).")


class ConceptList(BaseModel):
    """A model's built-in concepts and the caller's own."""

    concepts: list[ConceptOut] = Field(description="The concepts.")


def images_out(result: LatentImages, *, latents: bool, seed: bool = False) -> LatentImagesOut:
    return LatentImagesOut(
        model=result.model,
        images=[image_out(image) for image in result.images],
        latents=result.latents.tolist() if latents else None,
        seed=result.seed if seed else None,
    )


def encodings_out(result: Encodings) -> EncodingsOut:
    return EncodingsOut(model=result.model, means=result.mean.tolist(), log_variances=result.log_variance.tolist())


def manifold_out(result: Manifold) -> ManifoldOut:
    return ManifoldOut(model=result.model, images=[image_out(result.grid)], grid_size=result.grid_size)


def concept_out(concept: Concept) -> ConceptOut:
    return ConceptOut(
        name=concept.name,
        model=concept.model,
        source=concept.source,
        description=concept.description,
        norm=concept.norm,
        positives=concept.positives,
        negatives=concept.negatives,
    )
