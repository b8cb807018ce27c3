"""The latent routes: sample, encode, decode, interpolate, manifold, arithmetic, and concepts
(create, list, delete, apply). JSON in and out; each is one unary call of the latent service,
cancelled if the client leaves first."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Query, Request, Response

from genserve.http.calls import Call
from genserve.http.disconnect import unless_disconnected
from genserve.http.errors import naming
from genserve.http.media import json_response
from genserve.http.routes.latent_schema import (
    LATENT_FIELDS,
    MODEL,
    ApplyConceptRequest,
    ArithmeticRequest,
    ConceptList,
    ConceptOut,
    CreateConceptRequest,
    DecodeRequest,
    EncodeRequest,
    EncodingsOut,
    InterpolateRequest,
    LatentImagesOut,
    ManifoldOut,
    ManifoldRequest,
    SampleRequest,
    concept_out,
    encodings_out,
    images_out,
    manifold_out,
)

router = APIRouter(tags=["latent"])
T = TypeVar("T")
ModelQuery = Query("", description=MODEL)


async def _called(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, its failure in this API's field names; cancelled if the client leaves."""
    with naming(LATENT_FIELDS):
        return await unless_disconnected(request, work)


@router.post("/v1/latent/sample", response_model=LatentImagesOut, summary="New images from the prior")
async def sample(body: SampleRequest, request: Request, call: Call) -> Response:
    options = body.model_dump(exclude={"n", "return_latents"})
    result = await _called(
        request,
        call.client.sample(body.n, return_latents=body.return_latents, timeout=call.timeout, **options),
    )
    return json_response(images_out(result, latents=body.return_latents, seed=True))


@router.post("/v1/latent/encode", response_model=EncodingsOut, summary="Images → posterior means (VAE)")
async def encode(body: EncodeRequest, request: Request, call: Call) -> Response:
    result = await _called(request, call.client.encode(body.images, model=body.model, timeout=call.timeout))
    return json_response(encodings_out(result))


@router.post("/v1/latent/decode", response_model=LatentImagesOut, summary="Latent vectors → images")
async def decode(body: DecodeRequest, request: Request, call: Call) -> Response:
    result = await _called(request, call.client.decode(body.latents, model=body.model, timeout=call.timeout))
    return json_response(images_out(result, latents=False))


@router.post("/v1/latent/interpolate", response_model=LatentImagesOut, summary="A walk between two points")
async def interpolate(body: InterpolateRequest, request: Request, call: Call) -> Response:
    walk = call.client.interpolate(
        body.start, body.end, steps=body.steps, method=body.method, model=body.model, timeout=call.timeout
    )
    return json_response(images_out(await _called(request, walk), latents=True))


@router.post("/v1/latent/manifold", response_model=ManifoldOut, summary="The decoded grid of a 2-d latent space")
async def manifold(body: ManifoldRequest, request: Request, call: Call) -> Response:
    grid = call.client.manifold(
        model=body.model, grid_size=body.grid_size, quantile=body.quantile, timeout=call.timeout
    )
    return json_response(manifold_out(await _called(request, grid)))


@router.post("/v1/latent/arithmetic", response_model=LatentImagesOut, summary="a − b + c in latent space")
async def arithmetic(body: ArithmeticRequest, request: Request, call: Call) -> Response:
    decoded = call.client.arithmetic(body.a, body.b, body.c, model=body.model, timeout=call.timeout)
    return json_response(images_out(await _called(request, decoded), latents=True))


@router.post("/v1/latent/concepts", response_model=ConceptOut, summary="Define a concept vector from examples")
async def create_concept(body: CreateConceptRequest, request: Request, call: Call) -> Response:
    created = call.client.create_concept(
        body.name,
        body.positives,
        body.negatives,
        model=body.model,
        description=body.description,
        timeout=call.timeout,
    )
    return json_response(concept_out(await _called(request, created)))


@router.get("/v1/latent/concepts", response_model=ConceptList, summary="A model's built-in concepts and yours")
async def list_concepts(request: Request, call: Call, model: str = ModelQuery) -> Response:
    concepts = await _called(request, call.client.list_concepts(model=model, timeout=call.timeout))
    return json_response(ConceptList(concepts=[concept_out(concept) for concept in concepts]))


@router.delete("/v1/latent/concepts/{name}", response_model=ConceptOut, summary="Delete one of your concepts")
async def delete_concept(name: str, request: Request, call: Call, model: str = ModelQuery) -> Response:
    deleted = await _called(request, call.client.delete_concept(name, model=model, timeout=call.timeout))
    return json_response(concept_out(deleted))


@router.post(
    "/v1/latent/concepts/{name}/apply",
    response_model=LatentImagesOut,
    summary="Move a point along a concept: one image per strength",
)
async def apply_concept(name: str, body: ApplyConceptRequest, request: Request, call: Call) -> Response:
    edits = call.client.apply_concept(
        name, body.point, strengths=body.strengths, model=body.model, timeout=call.timeout
    )
    return json_response(images_out(await _called(request, edits), latents=True))
