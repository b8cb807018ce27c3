"""`genserve.client.Client` against the real stack: every RPC family, typed results, errors, keys."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from genserve.client import (
    Client,
    DreamProgress,
    ImageResult,
    InvalidArgument,
    NotFound,
    StyleProgress,
    Unauthenticated,
)
from tests.client.conftest import API_KEY, LATENT_2D, LATENT_MODEL, Stack


def test_generate_returns_every_completion_with_its_details(client: Client) -> None:
    generation = client.generate("ROMEO:", max_tokens=12, seed=7, n=2, logprobs=True, top_logprobs=2)
    assert generation.model and generation.seed == 7 and generation.prompt_tokens == len("ROMEO:")
    assert [c.index for c in generation.completions] == [0, 1]
    for completion in generation.completions:
        assert len(completion.text) == 12 and completion.finish_reason == "length"
        assert completion.completion_tokens == 12 and completion.seed
        assert [token.text for token in completion.tokens] == list(completion.text)
        assert all(token.logprob <= 0 and len(token.top_logprobs) == 2 for token in completion.tokens)
    assert generation.text == generation.completions[0].text


def test_a_stop_sequence_is_reported_as_the_finish_reason(client: Client) -> None:
    completion = client.generate("ROMEO:", max_tokens=200, seed=3, stop=["e"]).completions[0]
    assert completion.finish_reason == "stop" and "e" not in completion.text


def test_the_stream_gives_the_same_text_piece_by_piece(client: Client) -> None:
    whole = client.generate("JULIET:", max_tokens=30, seed=11, temperature=0.8).text
    pieces = list(client.generate_stream("JULIET:", max_tokens=30, seed=11, temperature=0.8))
    assert "".join(piece.text for piece in pieces) == whole
    assert pieces[0].model and pieces[0].seed == 11
    assert pieces[-1].finish_reason == "length" and pieces[-1].completion_tokens == 30


def test_dream_streams_progress_then_the_result(client: Client, photo: Image.Image) -> None:
    events = list(client.dream_stream(photo, octaves=2, steps_per_octave=2, preview_every=2, seed=1, max_size=48))
    assert all(isinstance(event, DreamProgress) for event in events)
    progress = [event for event in events if event.result is None]
    assert progress[-1].steps_done == progress[-1].total_steps == 4
    assert any(event.preview is not None for event in events)
    result = events[-1].result
    assert result is not None and (result.width, result.height) == (48, 36)
    decoded = result.image()
    assert decoded.size == (48, 36) and result.png.startswith(b"\x89PNG")


def test_dream_accepts_bytes_and_paths_and_returns_the_image(
    client: Client, photo: Image.Image, tmp_path: pytest.TempPathFactory
) -> None:
    path = tmp_path / "photo.png"  # type: ignore[operator]
    photo.save(path)
    from_path = client.dream(path, octaves=1, steps_per_octave=1, seed=2, max_size=32)
    from_bytes = client.dream(path.read_bytes(), octaves=1, steps_per_octave=1, seed=2, max_size=32)
    assert isinstance(from_path, ImageResult) and from_path.png == from_bytes.png


def test_style_preview_streams_losses_then_the_result(
    client: Client, photo: Image.Image, painting: Image.Image
) -> None:
    events = list(client.style_preview_stream(photo, painting, iterations=3, max_size=32, seed=4))
    assert all(isinstance(event, StyleProgress) for event in events)
    steps = [event.step for event in events if event.losses is not None]
    assert steps[-1] == 3 and all(e.losses.total > 0 for e in events if e.losses is not None)
    image = client.style_preview(photo, [(painting, 1.0)], iterations=2, max_size=32, seed=4)
    assert max(image.width, image.height) == 32


def test_latent_sample_encode_decode_interpolate(client: Client) -> None:
    drawn = client.sample(3, model=LATENT_MODEL, seed=5, return_latents=True)
    assert drawn.model == LATENT_MODEL and drawn.seed == 5 and len(drawn.images) == 3
    assert drawn.latents.shape == (3, 16) and drawn.latents.dtype == np.float32
    again = client.sample(3, model=LATENT_MODEL, seed=5)
    assert [image.png for image in again.images] == [image.png for image in drawn.images]
    assert again.latents.shape == (0, 0)

    decoded = client.decode(drawn.latents, model=LATENT_MODEL)
    assert [image.png for image in decoded.images] == [image.png for image in drawn.images]

    encoded = client.encode([image.png for image in drawn.images], model=LATENT_MODEL)
    assert encoded.mean.shape == encoded.log_variance.shape == (3, 16)
    # A decoded sample encodes back near where it came from (the VAE's posterior mean).
    distance = np.linalg.norm(encoded.mean - drawn.latents, axis=1)
    assert (distance < np.linalg.norm(drawn.latents, axis=1)).all()

    walk = client.interpolate(drawn.latents[0], drawn.images[1].image(), steps=4, method="lerp", model=LATENT_MODEL)
    assert len(walk.images) == 4 and walk.latents.shape == (4, 16)
    np.testing.assert_allclose(walk.latents[0], drawn.latents[0], atol=1e-5)


def test_latent_arithmetic_and_manifold(client: Client) -> None:
    points = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    combined = client.arithmetic(points[0], points[1], points[2], model=LATENT_MODEL)
    expected = client.decode(points[0] - points[1] + points[2], model=LATENT_MODEL)
    assert len(combined.images) == 1 and combined.images[0].png == expected.images[0].png
    grid = client.manifold(model=LATENT_2D, grid_size=3)
    assert grid.grid_size == 3 and grid.grid.image().size == (grid.grid.width, grid.grid.height)


def test_latent_concepts_list_create_apply_delete(client: Client) -> None:
    builtins = client.list_concepts(model=LATENT_MODEL)
    assert builtins and all(concept.model == LATENT_MODEL for concept in builtins)
    images = client.sample(4, model=LATENT_MODEL, seed=9).images
    made = client.create_concept(
        "mine", [i.png for i in images[:2]], [i.png for i in images[2:]], model=LATENT_MODEL, description="test"
    )
    assert (made.name, made.source, made.positives, made.negatives) == ("mine", "user", 2, 2)
    assert "mine" in {concept.name for concept in client.list_concepts(model=LATENT_MODEL)}
    strip = client.apply_concept("mine", images[0].png, strengths=[-1, 0, 1], model=LATENT_MODEL)
    assert len(strip.images) == 3
    assert client.delete_concept("mine", model=LATENT_MODEL).name == "mine"
    with pytest.raises(NotFound) as missing:
        client.delete_concept("mine", model=LATENT_MODEL)
    assert missing.value.code == "NOT_FOUND" and "mine" in missing.value.message


def test_models_list_and_describe(client: Client) -> None:
    listed = client.list_models()
    assert {"text", "vision", "latent"} <= {model.family for model in listed}
    text = client.list_models("text")
    assert text and all(model.family == "text" for model in text)
    assert sum(model.is_default for model in text) == 1
    vgg = client.describe_model("vgg16")
    assert vgg.family == "vision" and "relu4_2" in vgg.layers and vgg.parameter_count > 0


def test_server_errors_raise_the_client_hierarchy(client: Client) -> None:
    with pytest.raises(NotFound) as unknown:
        client.describe_model("no-such-model")
    assert unknown.value.code == "NOT_FOUND"
    with pytest.raises(InvalidArgument) as refused:
        client.generate("ROMEO:", temperature=9.0)
    assert refused.value.code == "INVALID_ARGUMENT" and "temperature" in refused.value.message


def test_client_side_checks_raise_invalid_argument_before_any_call(client: Client, painting: Image.Image) -> None:
    with pytest.raises(InvalidArgument, match="lbfgs, adam"):
        client.style_preview(painting, painting, optimizer="sgd")
    with pytest.raises(InvalidArgument, match="cannot read"):
        client.dream("/no/such/photo.png")
    with pytest.raises(InvalidArgument, match="queued, running"):
        client.list_jobs(state="done")


def test_an_api_key_is_required_and_checked(stack: Stack) -> None:
    with Client(stack.gateway.address, api_key=API_KEY) as keyed:
        assert keyed.list_models("text")
    for key in ("wrong-key", ""):
        with Client(stack.gateway.address, api_key=key) as other, pytest.raises(Unauthenticated) as refused:
            other.list_models()
        assert refused.value.code == "UNAUTHENTICATED"


def test_image_results_decode_to_pil(client: Client) -> None:
    image = client.sample(1, model=LATENT_MODEL, seed=1).images[0]
    assert Image.open(io.BytesIO(image.png)).size == image.image().size == (image.width, image.height)
