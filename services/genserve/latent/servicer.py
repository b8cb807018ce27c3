"""LatentService over gRPC: protobuf ↔ the domain layer (service.py).

The caller's API key arrives as the principal the gateway forwards; user concepts are kept per
principal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
import torch

from genserve.common.caller import principal_of
from genserve.common.errors import InvalidArgument, loaded
from genserve.common.images import EncodedImage, image_message
from genserve.latent.concepts import ConceptVector
from genserve.latent.operations import LatentModel, LatentOperations, PointInput
from genserve.v1 import latent_pb2, latent_pb2_grpc

METHODS = {
    latent_pb2.INTERPOLATION_METHOD_UNSPECIFIED: "slerp",
    latent_pb2.INTERPOLATION_METHOD_SLERP: "slerp",
    latent_pb2.INTERPOLATION_METHOD_LERP: "lerp",
}


def principal(context: grpc.aio.ServicerContext) -> str:
    return principal_of(context.invocation_metadata())


def point_input(point: latent_pb2.LatentPoint) -> PointInput:
    which = point.WhichOneof("source")
    if which == "vector":
        return PointInput(vector=list(point.vector.values))
    if which == "image":
        return PointInput(image=point.image.data)
    return PointInput()


def vectors(z: torch.Tensor) -> list[latent_pb2.LatentVector]:
    return [latent_pb2.LatentVector(values=row.tolist()) for row in z]


def images_response(
    model: LatentModel, images: Sequence[EncodedImage], latents: torch.Tensor | None = None, seed: int = 0
) -> latent_pb2.ImagesResponse:
    return latent_pb2.ImagesResponse(
        model=model.name,
        images=[image_message(image) for image in images],
        latents=vectors(latents) if latents is not None else [],
        seed=seed,
    )


def concept_message(concept: ConceptVector) -> latent_pb2.Concept:
    return latent_pb2.Concept(
        name=concept.name,
        model=concept.model,
        source=concept.source,
        description=concept.description,
        norm=float(concept.vector.norm()),
        positives=concept.positives,
        negatives=concept.negatives,
    )


class LatentServicer(latent_pb2_grpc.LatentServiceServicer):
    def __init__(self, operations: Callable[[], LatentOperations | None]) -> None:
        self._operations = operations

    def operations(self) -> LatentOperations:
        return loaded(self._operations(), "latent models")

    async def Sample(
        self, request: latent_pb2.SampleRequest, context: grpc.aio.ServicerContext
    ) -> latent_pb2.ImagesResponse:
        model, images, z, seed = await self.operations().sample(
            request.model,
            request.n,
            request.seed if request.HasField("seed") else None,
            request.temperature if request.HasField("temperature") else None,
            request.truncation,
        )
        return images_response(model, images, z if request.return_latents else None, seed)

    async def Encode(
        self, request: latent_pb2.EncodeRequest, context: grpc.aio.ServicerContext
    ) -> latent_pb2.EncodeResponse:
        model, mean, log_variance = await self.operations().encode(request.model, [i.data for i in request.images])
        encodings = [
            latent_pb2.Encoding(mean=m, log_variance=v)
            for m, v in zip(vectors(mean), vectors(log_variance), strict=True)
        ]
        return latent_pb2.EncodeResponse(model=model.name, encodings=encodings)

    async def Decode(
        self, request: latent_pb2.DecodeRequest, context: grpc.aio.ServicerContext
    ) -> latent_pb2.ImagesResponse:
        model, images = await self.operations().decode(request.model, [list(v.values) for v in request.latents])
        return images_response(model, images)

    async def Interpolate(
        self, request: latent_pb2.InterpolateRequest, context: grpc.aio.ServicerContext
    ) -> latent_pb2.ImagesResponse:
        if request.method not in METHODS:
            raise InvalidArgument(f"method {request.method} is not one of LERP, SLERP")
        model, images, z = await self.operations().interpolate(
            request.model, point_input(request.start), point_input(request.end), request.steps, METHODS[request.method]
        )
        return images_response(model, images, z)

    async def Manifold(
        self, request: latent_pb2.ManifoldRequest, context: grpc.aio.ServicerContext
    ) -> latent_pb2.ManifoldResponse:
        model, grid, size = await self.operations().manifold(request.model, request.grid_size, request.quantile)
        return latent_pb2.ManifoldResponse(model=model.name, grid=image_message(grid), grid_size=size)

    async def Arithmetic(
        self, request: latent_pb2.ArithmeticRequest, context: grpc.aio.ServicerContext
    ) -> latent_pb2.ImagesResponse:
        model, images, z = await self.operations().arithmetic(
            request.model, point_input(request.a), point_input(request.b), point_input(request.c)
        )
        return images_response(model, images, z)

    async def CreateConcept(
        self, request: latent_pb2.CreateConceptRequest, context: grpc.aio.ServicerContext
    ) -> latent_pb2.Concept:
        concept = await self.operations().create_concept(
            principal(context),
            request.name,
            request.model,
            request.description,
            [i.data for i in request.positives],
            [i.data for i in request.negatives],
        )
        return concept_message(concept)

    async def ListConcepts(
        self, request: latent_pb2.ListConceptsRequest, context: grpc.aio.ServicerContext
    ) -> latent_pb2.ListConceptsResponse:
        concepts = await self.operations().list_concepts(principal(context), request.model)
        return latent_pb2.ListConceptsResponse(concepts=[concept_message(c) for c in concepts])

    async def DeleteConcept(
        self, request: latent_pb2.DeleteConceptRequest, context: grpc.aio.ServicerContext
    ) -> latent_pb2.Concept:
        concept = await self.operations().delete_concept(principal(context), request.model, request.name)
        return concept_message(concept)

    async def ApplyConcept(
        self, request: latent_pb2.ApplyConceptRequest, context: grpc.aio.ServicerContext
    ) -> latent_pb2.ImagesResponse:
        model, images, z = await self.operations().apply_concept(
            principal(context), request.model, request.concept, point_input(request.point), list(request.strengths)
        )
        return images_response(model, images, z)
