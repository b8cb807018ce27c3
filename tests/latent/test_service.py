"""LatentService through the gateway, on the committed VAEs (and GANs where present), over real sockets."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from genserve.latent.attributes import thickness
from genserve.latent.data import load_dataset
from genserve.testing import ServerProcess
from genserve.v1 import common_pb2, latent_pb2, latent_pb2_grpc
from tests.conftest import ROOT, behind_gateway

VAE, VAE_2D = "mnist-vae-16d", "mnist-vae-2d"
ALICE, BOB = [("authorization", "Bearer alice-key")], [("authorization", "Bearer bob-key")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = {"GENSERVE_LATENT_MODELS": f"{VAE},{VAE_2D}", "GENSERVE_LATENT_MAX_IMAGES": "64"}
    keys = {"GENSERVE_API_KEYS": "alice:alice-key,bob:bob-key"}
    with behind_gateway("latent", tmp_path_factory.mktemp("latent"), env, keys) as processes:
        yield processes


@pytest.fixture(scope="module")
def latent(stack: tuple[ServerProcess, ServerProcess]) -> Iterator[latent_pb2_grpc.LatentServiceStub]:
    with grpc.insecure_channel(stack[1].address) as channel:
        yield latent_pb2_grpc.LatentServiceStub(channel)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_dataset("mnist", "test", ROOT / "var" / "packages")
    return images[:2000], labels[:2000]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(image: common_pb2.Image) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("L"), dtype=np.float64) / 255.0


def vector(values: list[float]) -> latent_pb2.LatentVector:
    return latent_pb2.LatentVector(values=values)


def test_sample_is_reproducible_by_seed_and_returns_its_latents(latent: latent_pb2_grpc.LatentServiceStub) -> None:
    request = latent_pb2.SampleRequest(model=VAE, n=4, seed=9, return_latents=True)
    first, again = (
        latent.Sample(request, timeout=30, metadata=ALICE),
        latent.Sample(request, timeout=30, metadata=ALICE),
    )
    assert [i.data for i in first.images] == [i.data for i in again.images] and first.seed == 9
    assert len(first.latents) == 4 and len(first.latents[0].values) == 16
    other = latent.Sample(latent_pb2.SampleRequest(model=VAE, n=4, seed=10), timeout=30, metadata=ALICE)
    assert [i.data for i in other.images] != [i.data for i in first.images]
    assert (first.images[0].width, first.images[0].height) == (28, 28)
    truncated = latent.Sample(
        latent_pb2.SampleRequest(model=VAE, n=8, seed=3, truncation=0.5, return_latents=True),
        timeout=30,
        metadata=ALICE,
    )
    assert max(abs(v) for point in truncated.latents for v in point.values) <= 0.5


def test_encode_then_decode_reconstructs_test_digits(
    latent: latent_pb2_grpc.LatentServiceStub, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images = digits[0][:32]
    encoded = latent.Encode(
        latent_pb2.EncodeRequest(model=VAE, images=[common_pb2.Image(data=png(i)) for i in images]),
        timeout=30,
        metadata=ALICE,
    )
    assert len(encoded.encodings) == 32 and all(len(e.mean.values) == 16 for e in encoded.encodings)
    decoded = latent.Decode(
        latent_pb2.DecodeRequest(model=VAE, latents=[e.mean for e in encoded.encodings]), timeout=30, metadata=ALICE
    )
    error = np.mean([np.abs(pixels(d) - i / 255.0).mean() for d, i in zip(decoded.images, images, strict=True)])
    shuffled = np.mean(
        [np.abs(pixels(d) - i / 255.0).mean() for d, i in zip(decoded.images, images[::-1], strict=True)]
    )
    # Bernoulli means are soft-edged: a mean absolute error under 0.1 per pixel is a faithful (if blurred) copy.
    assert error < 0.1 and error < 0.5 * shuffled, (error, shuffled)


def test_a_dark_digit_on_white_paper_of_any_size_encodes_like_the_original(
    latent: latent_pb2_grpc.LatentServiceStub, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    originals = digits[0][:20]
    paper = Image.fromarray(255 - originals[0]).resize((200, 200), Image.Resampling.BICUBIC).convert("RGB")
    buffer = io.BytesIO()
    paper.save(buffer, format="JPEG")
    images = [common_pb2.Image(data=png(o)) for o in originals] + [common_pb2.Image(data=buffer.getvalue())]
    encodings = latent.Encode(latent_pb2.EncodeRequest(model=VAE, images=images), timeout=30, metadata=ALICE).encodings
    means = np.array([e.mean.values for e in encodings])
    distances = np.linalg.norm(means[:20] - means[20], axis=1)
    assert int(np.argmin(distances)) == 0, distances  # nearest to its own original among 20 digits


def test_bmp_and_gif_uploads_encode_like_the_same_png(
    latent: latent_pb2_grpc.LatentServiceStub, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    originals = digits[0][:3]

    def encode(data: list[bytes]) -> np.ndarray:
        images = [common_pb2.Image(data=d) for d in data]
        reply = latent.Encode(latent_pb2.EncodeRequest(model=VAE, images=images), timeout=30, metadata=ALICE)
        return np.array([e.mean.values for e in reply.encodings])

    def saved(array: np.ndarray, fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=fmt, **options)
        return buffer.getvalue()

    # An animated GIF: the digit first, then a blank frame the service must not read.
    blank = Image.fromarray(np.zeros_like(originals[0]))
    gifs = [saved(o, "GIF", save_all=True, append_images=[blank], duration=100) for o in originals]
    as_png = encode([png(o) for o in originals])
    assert np.allclose(encode([saved(o, "BMP") for o in originals]), as_png, atol=1e-5)
    assert np.allclose(encode(gifs), as_png, atol=1e-5)


def test_interpolation_ends_at_its_inputs_and_slerp_follows_the_circle(
    latent: latent_pb2_grpc.LatentServiceStub,
) -> None:
    a, b = [2.0] + [0.0] * 15, [0.0, 1.0] + [0.0] * 14
    request = latent_pb2.InterpolateRequest(
        model=VAE,
        start=latent_pb2.LatentPoint(vector=vector(a)),
        end=latent_pb2.LatentPoint(vector=vector(b)),
        steps=5,
        method=latent_pb2.INTERPOLATION_METHOD_SLERP,
    )
    walk = latent.Interpolate(request, timeout=30, metadata=ALICE)
    points = np.array([p.values for p in walk.latents])
    assert len(walk.images) == 5 and np.allclose(points[0], a) and np.allclose(points[-1], b)
    assert np.allclose(np.linalg.norm(points, axis=1), np.linspace(2.0, 1.0, 5), atol=1e-5)
    request.method = latent_pb2.INTERPOLATION_METHOD_LERP
    straight = np.array([p.values for p in latent.Interpolate(request, timeout=30, metadata=ALICE).latents])
    assert np.allclose(straight[2], (np.array(a) + np.array(b)) / 2, atol=1e-6)


def test_the_2d_manifold_is_one_grid_image(latent: latent_pb2_grpc.LatentServiceStub) -> None:
    grid = latent.Manifold(latent_pb2.ManifoldRequest(model=VAE_2D, grid_size=10), timeout=30, metadata=ALICE)
    assert (grid.grid.width, grid.grid.height, grid.grid_size) == (280, 280, 10)
    with pytest.raises(grpc.RpcError) as info:
        latent.Manifold(latent_pb2.ManifoldRequest(model=VAE), timeout=30, metadata=ALICE)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs a 2-d model" in info.value.details()


def test_arithmetic_is_a_minus_b_plus_c(latent: latent_pb2_grpc.LatentServiceStub) -> None:
    a, b, c = [1.0] * 16, [0.5] * 16, [-1.0] * 16
    reply = latent.Arithmetic(
        latent_pb2.ArithmeticRequest(
            model=VAE, a=latent_pb2.LatentPoint(vector=vector(a)), b=latent_pb2.LatentPoint(vector=vector(b)),
            c=latent_pb2.LatentPoint(vector=vector(c)),
        ),
        timeout=30, metadata=ALICE,
    )  # fmt: skip
    assert np.allclose(reply.latents[0].values, [-0.5] * 16) and len(reply.images) == 1


def test_a_thickness_concept_makes_digits_thicker_step_by_step(
    latent: latent_pb2_grpc.LatentServiceStub, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digits
    ones = images[labels == 1]
    ink = thickness(torch.from_numpy(ones).float() / 255.0).numpy()
    order = np.argsort(ink)
    thin, thick = ones[order[:40]], ones[order[-40:]]
    concept = latent.CreateConcept(
        latent_pb2.CreateConceptRequest(
            model=VAE, name="bold", description="thick vs thin ones",
            positives=[common_pb2.Image(data=png(i)) for i in thick],
            negatives=[common_pb2.Image(data=png(i)) for i in thin],
        ),
        timeout=60, metadata=ALICE,
    )  # fmt: skip
    assert (concept.source, concept.positives, concept.negatives) == ("user", 40, 40) and concept.norm > 0
    strengths = [0.0, 0.5, 1.0, 1.5]  # below 0 the strokes reach the 2-pixel floor of the measure
    for digit in images[labels == 7][:3]:
        strip = latent.ApplyConcept(
            latent_pb2.ApplyConceptRequest(
                model=VAE, concept="bold", point=latent_pb2.LatentPoint(image=common_pb2.Image(data=png(digit))),
                strengths=strengths,
            ),
            timeout=30, metadata=ALICE,
        )  # fmt: skip
        measured = thickness(torch.tensor(np.stack([pixels(i) for i in strip.images]))).tolist()
        assert all(b > a for a, b in itertools.pairwise(measured)), measured
    names = [
        c.name
        for c in latent.ListConcepts(latent_pb2.ListConceptsRequest(model=VAE), timeout=30, metadata=ALICE).concepts
    ]
    assert "bold" in names and {"thicker", "slant-right", "3-to-8"} <= set(names)
    # Concepts belong to the API key that made them.
    bob = [
        c.name
        for c in latent.ListConcepts(latent_pb2.ListConceptsRequest(model=VAE), timeout=30, metadata=BOB).concepts
    ]
    assert "bold" not in bob
    deleted = latent.DeleteConcept(latent_pb2.DeleteConceptRequest(model=VAE, name="bold"), timeout=30, metadata=ALICE)
    assert deleted.name == "bold"


def test_the_built_in_label_concept_turns_threes_into_eights(
    latent: latent_pb2_grpc.LatentServiceStub, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    from genserve.latent.models import load_model

    classifier = load_model(ROOT / "model_store" / "latent" / "mnist-classifier.safetensors")
    images, labels = digits
    edited = []
    for digit in images[labels == 3][:16]:
        strip = latent.ApplyConcept(
            latent_pb2.ApplyConceptRequest(
                model=VAE, concept="3-to-8", point=latent_pb2.LatentPoint(image=common_pb2.Image(data=png(digit))),
                strengths=[0.0, 1.5],
            ),
            timeout=30, metadata=ALICE,
        )  # fmt: skip
        edited.append([pixels(i) for i in strip.images])
    batch = torch.tensor(np.array(edited), dtype=torch.float32)  # (16, 2, 28, 28)
    with torch.inference_mode():
        before = classifier(batch[:, 0, None]).argmax(1)
        after = classifier(batch[:, 1, None]).argmax(1)
    assert int((before == 3).sum()) >= 14 and int((after == 8).sum()) >= 10 and int((after == 3).sum()) <= 1, (
        before,
        after,
    )


def batch_totals(metrics: str) -> dict[str, float]:
    """The VAE's decode-pass histograms from a /metrics page: points and requests (sums), and passes (count)."""
    totals = {}
    for family in text_string_to_metric_families(metrics):
        if family.name in ("genserve_latent_batch_size", "genserve_latent_batch_requests"):
            for sample in family.samples:
                if sample.labels.get("model") == VAE and sample.name.endswith(("_sum", "_count")):
                    totals[sample.name] = sample.value
    return totals


def test_batched_and_unbatched_decodes_give_the_same_pixels(
    stack: tuple[ServerProcess, ServerProcess], latent: latent_pb2_grpc.LatentServiceStub
) -> None:
    points = [vector([math.sin(i + j) for j in range(16)]) for i in range(24)]
    backend = stack[0]
    alone = [
        latent.Decode(latent_pb2.DecodeRequest(model=VAE, latents=[p]), timeout=30, metadata=ALICE).images[0].data
        for p in points
    ]
    before = batch_totals(backend.metrics())
    with ThreadPoolExecutor(24) as pool:
        together = list(
            pool.map(
                lambda p: (
                    latent.Decode(latent_pb2.DecodeRequest(model=VAE, latents=[p]), timeout=30, metadata=ALICE)
                    .images[0]
                    .data
                ),
                points,
            )
        )
    after_together = batch_totals(backend.metrics())
    assert together == alone
    one_call = latent.Decode(latent_pb2.DecodeRequest(model=VAE, latents=points), timeout=30, metadata=ALICE)
    assert [i.data for i in one_call.images] == alone
    # The batch-size histograms saw every point and request of the concurrent decodes, in 1 to 24 passes.
    assert after_together["genserve_latent_batch_size_sum"] - before["genserve_latent_batch_size_sum"] == 24
    assert after_together["genserve_latent_batch_requests_sum"] - before["genserve_latent_batch_requests_sum"] == 24
    passes = after_together["genserve_latent_batch_size_count"] - before["genserve_latent_batch_size_count"]
    assert 1 <= passes <= 24


INVALID, MISSING = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
BAD = [
    ("wrong dimension", "Decode", latent_pb2.DecodeRequest(model=VAE, latents=[vector([0.0] * 3)]), INVALID,
     "latents[0] has 3 components; mnist-vae-16d has a 16-d latent space"),
    ("NaN component", "Decode", latent_pb2.DecodeRequest(model=VAE, latents=[vector([0.0] * 15 + [math.nan])]),
     INVALID, "latents[0][15] must be finite"),
    ("infinite component", "Decode", latent_pb2.DecodeRequest(model=VAE, latents=[vector([math.inf] + [0.0] * 15)]),
     INVALID, "latents[0][0] must be finite"),
    ("no latents", "Decode", latent_pb2.DecodeRequest(model=VAE), INVALID, "latents count must be in [1, 64]"),
    ("too many", "Sample", latent_pb2.SampleRequest(model=VAE, n=65), INVALID, "n must be in [1, 64]"),
    ("temperature", "Sample", latent_pb2.SampleRequest(model=VAE, temperature=4.0), INVALID,
     "temperature must be in (0, 3]"),
    ("truncation", "Sample", latent_pb2.SampleRequest(model=VAE, truncation=0.05), INVALID,
     "truncation must be 0 (off)"),
    ("unknown model", "Sample", latent_pb2.SampleRequest(model="celeb-vae"), MISSING,
     "latent model 'celeb-vae' is not loaded; models:"),
    ("too many steps", "Interpolate", latent_pb2.InterpolateRequest(
        model=VAE, start=latent_pb2.LatentPoint(vector=vector([0.0] * 16)),
        end=latent_pb2.LatentPoint(vector=vector([1.0] * 16)), steps=100), INVALID, "steps must be in [2, 64]"),
    ("missing endpoint", "Interpolate", latent_pb2.InterpolateRequest(
        model=VAE, start=latent_pb2.LatentPoint(vector=vector([0.0] * 16))), INVALID,
     "end must be a latent vector or an image"),
    ("undecodable image", "Encode", latent_pb2.EncodeRequest(model=VAE, images=[common_pb2.Image(data=b"junk")]),
     INVALID, "images[0] is not a readable image"),
    ("unknown concept", "ApplyConcept", latent_pb2.ApplyConceptRequest(
        model=VAE, concept="smile", point=latent_pb2.LatentPoint(vector=vector([0.0] * 16))), MISSING,
     "concept 'smile' not found for mnist-vae-16d; concepts: 1-to-7"),
    ("strength out of range", "ApplyConcept", latent_pb2.ApplyConceptRequest(
        model=VAE, concept="thicker", point=latent_pb2.LatentPoint(vector=vector([0.0] * 16)), strengths=[6.0]),
     INVALID, "strengths[0] must be in [-5, 5]"),
    ("empty examples", "CreateConcept", latent_pb2.CreateConceptRequest(model=VAE, name="x"), INVALID,
     "positives count must be in [1, 64]"),
    ("bad concept name", "CreateConcept", latent_pb2.CreateConceptRequest(model=VAE, name="Big Smile"), INVALID,
     "concept name must be 1 to 64 of [a-z0-9_-]"),
    ("built-in name", "CreateConcept", latent_pb2.CreateConceptRequest(model=VAE, name="thicker"), INVALID,
     "'thicker' is a built-in concept"),
    ("grid size", "Manifold", latent_pb2.ManifoldRequest(model=VAE_2D, grid_size=50), INVALID,
     "grid_size must be in [2, 30]"),
    ("quantile", "Manifold", latent_pb2.ManifoldRequest(model=VAE_2D, quantile=0.7), INVALID,
     "quantile must be in (0, 0.5)"),
    ("delete unknown", "DeleteConcept", latent_pb2.DeleteConceptRequest(model=VAE, name="nothing"), MISSING,
     "you have no concept 'nothing'"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "method", "request_message", "code", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(
    latent: latent_pb2_grpc.LatentServiceStub,
    name: str,
    method: str,
    request_message: object,
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        getattr(latent, method)(request_message, timeout=30, metadata=ALICE)
    assert info.value.code() == code and message in info.value.details(), info.value.details()
