"""genserve.client: the Python client of a genserve gateway (blocking and asyncio).

    from genserve.client import Client

    with Client("127.0.0.1:50051", api_key="alice-key", timeout=300) as client:
        print(client.generate("ROMEO:", max_tokens=60, seed=1).text)
        for piece in client.generate_stream("JULIET:", max_tokens=60):
            print(piece.text, end="", flush=True)
        client.dream("var/samples/chelsea.png", octaves=3, steps_per_octave=10).save("dream.png")
        digits = client.sample(8, model="mnist-dcgan", seed=3, return_latents=True)
        print(digits.latents.shape, digits.images[0].image().size)  # numpy (8, 64); a PIL image
        job = client.submit_style_transfer(
            "var/samples/chelsea.png", "var/samples/scream.png", iterations=60, idempotency_key="cat"
        )
        for event in client.watch_job(job.id):  # reconnects by itself if the stream drops
            print(event.state, event.step, event.total_steps)
        client.get_job_result(job.id).image.save("styled.png")

`AsyncClient` has the same methods as coroutines and async iterators (`async with AsyncClient(...)`).
Images go in as bytes, paths or PIL images and come back as `ImageResult` (`.png` bytes, `.image()`
for PIL, `.save(path)`); latent vectors as numpy arrays. Failures raise `GenserveClientError`
subclasses (`NotFound`, `InvalidArgument`, `Unauthenticated`, ...) carrying the gRPC status name
and the server's message. Only calls that are safe to repeat are retried on UNAVAILABLE (see
`Retry`). The package needs grpc, protobuf, numpy and Pillow, never torch.
"""

from genserve.client.aio import AsyncClient
from genserve.client.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    GenserveClientError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from genserve.client.images import ImageInput, ImageResult
from genserve.client.results import (
    Completion,
    Concept,
    DreamProgress,
    Encodings,
    Generation,
    Job,
    JobEvent,
    JobEventKind,
    JobPage,
    JobResult,
    JobState,
    LatentImages,
    Manifold,
    ModelInfo,
    StyleLosses,
    StyleProgress,
    TextPiece,
    Token,
)
from genserve.client.settings import Retry
from genserve.client.sync import Client

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "Cancelled",
    "Client",
    "Completion",
    "Concept",
    "DeadlineExceeded",
    "DreamProgress",
    "Encodings",
    "FailedPrecondition",
    "Generation",
    "GenserveClientError",
    "ImageInput",
    "ImageResult",
    "Internal",
    "InvalidArgument",
    "Job",
    "JobEvent",
    "JobEventKind",
    "JobPage",
    "JobResult",
    "JobState",
    "LatentImages",
    "Manifold",
    "ModelInfo",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Retry",
    "StyleLosses",
    "StyleProgress",
    "TextPiece",
    "Token",
    "Unauthenticated",
    "Unavailable",
]
