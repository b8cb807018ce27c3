"""The style-transfer engine on the real VGG16: the math, the optimisation, colour and state."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from genserve.common.errors import InvalidArgument
from genserve.common.style_request import StyleParams, max_scales, params_from_json, params_to_json, validate
from genserve.vision.backbones import VGG16Features
from genserve.vision.color import match_color, rgb_to_ycbcr
from genserve.vision.pixels import resize
from genserve.vision.samples import sample_image
from genserve.vision.style import StateMismatch, StyleTransfer, blend_targets, gram_matrix, scale_sizes
from genserve.vision.style_progress import StyleProgress
from tests.vision.conftest import PACKAGE_CACHE, to_rgb_tensor

SIZE = 128  # small enough for 1 thread, big enough that relu5_1 has 8x5 positions
PREVIEW_STEPS = 60  # GENSERVE_VISION_PREVIEW_MAX_STEPS' default: the budget an interactive run has


@pytest.fixture(scope="module")
def content() -> torch.Tensor:
    image = sample_image("chelsea", PACKAGE_CACHE)
    image.thumbnail((SIZE, SIZE))
    return to_rgb_tensor(image)


@pytest.fixture(scope="module")
def style() -> torch.Tensor:
    # Stained tissue: purple and brown blobs, colours and textures the cat photo has nothing of.
    image = sample_image("ihc", PACKAGE_CACHE)
    image.thumbnail((SIZE, SIZE))
    return to_rgb_tensor(image)


def params(**changes: object) -> StyleParams:
    return dataclasses.replace(StyleParams(iterations=PREVIEW_STEPS, max_size=SIZE, seed=7), **changes)  # type: ignore[arg-type]


def run(engine: StyleTransfer, until: int | None = None) -> list[StyleProgress]:
    seen: list[StyleProgress] = []
    engine.run(seen.append, until_step=until)
    return seen


# --- the math -------------------------------------------------------------------------------


def test_gram_matrix_is_its_explicit_formula_with_the_same_gradient() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    gram = gram_matrix(features)
    b, c, h, w = features.shape
    explicit = torch.zeros(b, c, c, dtype=torch.float64)
    for n in range(b):
        for i in range(c):
            for j in range(c):
                explicit[n, i, j] = sum(
                    features[n, i, y, x] * features[n, j, y, x] for y in range(h) for x in range(w)
                ) / (c * h * w)
    torch.testing.assert_close(gram, explicit)
    # The hand-written backward must equal autograd's through the explicit product.
    weights = torch.randn(b, c, c, generator=generator, dtype=torch.float64)
    (ours,) = torch.autograd.grad((gram * weights).sum(), features)
    flat = features.reshape(b, c, h * w)
    (reference,) = torch.autograd.grad(((flat @ flat.mT) / (c * h * w) * weights).sum(), features)
    torch.testing.assert_close(ours, reference)
    # channels_last activations (what the engine feeds it) give the same matrix.
    torch.testing.assert_close(gram_matrix(features.contiguous(memory_format=torch.channels_last)), gram)


def test_gram_matrix_does_not_grow_with_the_image() -> None:
    tile = torch.rand(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(gram_matrix(tile.repeat(1, 1, 4, 4)), gram_matrix(tile))


def test_blended_targets_are_the_weighted_mean() -> None:
    a, b = {"relu1_1": torch.ones(1, 2, 2)}, {"relu1_1": torch.full((1, 2, 2), 4.0)}
    torch.testing.assert_close(blend_targets([a, b], [3.0, 1.0])["relu1_1"], torch.full((1, 2, 2), 1.75))


def test_scales_double_up_to_the_requested_size() -> None:
    assert scale_sizes(300, 451, 512, 3) == [(85, 128), (170, 256), (341, 512)]
    assert max_scales(512) == 5 and max_scales(64) == 2 and max_scales(32) == 1


# --- the optimisation -----------------------------------------------------------------------


def test_lbfgs_cuts_the_loss_to_a_tenth_within_the_preview_budget_mostly_through_style(
    vgg: VGG16Features, content: torch.Tensor, style: torch.Tensor
) -> None:
    engine = StyleTransfer(vgg, content, [(style, 1.0)], params())
    steps = run(engine)
    start, end = steps[0], engine.losses()
    assert [s.step for s in steps] == list(range(1, PREVIEW_STEPS + 1))
    assert all(s.total_steps == PREVIEW_STEPS for s in steps)
    assert end.total <= 0.10 * start.total, (start, end)
    # Starting from the content, the content term can only grow; the style term does the falling.
    drops = {"content": start.content - end.content, "style": start.style - end.style, "tv": start.tv - end.tv}
    assert max(drops, key=lambda k: drops[k]) == "style" and drops["style"] > 0.8 * start.total, drops
    assert all(math.isclose(s.total, s.content + s.style + s.tv, rel_tol=1e-6) for s in steps)
    assert steps[-1].elapsed_seconds >= steps[0].elapsed_seconds > 0
    image = engine.current_image()
    assert image.shape == (1, 3, *content.shape[-2:]) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    assert float((image - content).abs().mean()) > 0.03  # the photo visibly changed


def test_adam_lowers_the_loss_too(vgg: VGG16Features, content: torch.Tensor, style: torch.Tensor) -> None:
    engine = StyleTransfer(vgg, content, [(style, 1.0)], params(optimizer="adam", iterations=30))
    steps = run(engine)
    assert engine.losses().total < 0.5 * steps[0].total


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_texture_synthesis_from_noise_with_style_alone(
    vgg: VGG16Features, content: torch.Tensor, style: torch.Tensor, optimizer: str
) -> None:
    p = params(content_weight=0.0, tv_weight=0.0, init="noise", optimizer=optimizer, iterations=8)
    engine = StyleTransfer(vgg, content, [(style, 1.0)], p)
    steps = run(engine)
    assert all(s.content == 0 and s.tv == 0 for s in steps)
    assert engine.losses().style < steps[0].style


def test_noise_init_is_reproducible_by_seed(vgg: VGG16Features, content: torch.Tensor, style: torch.Tensor) -> None:
    def result(seed: int) -> torch.Tensor:
        engine = StyleTransfer(vgg, content, [(style, 1.0)], params(init="noise", iterations=4, seed=seed))
        return engine.run()

    first = result(3)
    assert torch.equal(first, result(3))
    assert not torch.equal(first, result(4))


def test_coarse_to_fine_ends_at_the_requested_size(
    vgg: VGG16Features, content: torch.Tensor, style: torch.Tensor
) -> None:
    engine = StyleTransfer(vgg, content, [(style, 1.0)], params(scales=2, iterations=6))
    sizes = []
    engine.run(lambda progress: sizes.append(engine.size))
    assert sizes == [scale_sizes(*content.shape[-2:], SIZE, 2)[0]] * 3 + [tuple(content.shape[-2:])] * 3
    assert engine.current_image().shape[-2:] == content.shape[-2:]


def test_two_styles_blend_between_their_single_style_results(
    vgg: VGG16Features, content: torch.Tensor, style: torch.Tensor
) -> None:
    other = torch.flip(style, dims=(1,))  # the same texture in swapped colours: a different Gram target
    p = params(iterations=1)
    alone = StyleTransfer(vgg, content, [(style, 1.0)], p)
    blended = StyleTransfer(vgg, content, [(style, 1.0), (other, 1.0)], p)
    zero_weight = StyleTransfer(vgg, content, [(style, 1.0), (other, 0.0)], p)
    assert math.isclose(alone.losses().style, zero_weight.losses().style, rel_tol=1e-5)
    assert not math.isclose(alone.losses().style, blended.losses().style, rel_tol=1e-2)


def test_a_raising_callback_stops_the_run_at_once_and_it_can_go_on(
    vgg: VGG16Features, content: torch.Tensor, style: torch.Tensor
) -> None:
    engine = StyleTransfer(vgg, content, [(style, 1.0)], params(iterations=5))

    def stop_at_two(progress: StyleProgress) -> None:
        if progress.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.run(stop_at_two)
    assert engine.step == 2
    assert [p.step for p in run(engine)] == [3, 4, 5]


# --- colour preservation --------------------------------------------------------------------


def chroma_error(image: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean absolute Cb/Cr difference on the [0, 1] scale."""
    return float((rgb_to_ycbcr(image)[:, 1:] - rgb_to_ycbcr(reference)[:, 1:]).abs().mean())


def test_luminance_transfer_keeps_the_content_chroma(
    vgg: VGG16Features, content: torch.Tensor, style: torch.Tensor
) -> None:
    plain = StyleTransfer(vgg, content, [(style, 1.0)], params(iterations=20)).run()
    kept = StyleTransfer(vgg, content, [(style, 1.0)], params(iterations=20, color="luminance")).run()
    # Only gamut clipping may move the chroma of a luminance-only result.
    assert chroma_error(kept, content) < 0.01
    assert chroma_error(plain, content) > 3 * chroma_error(kept, content)
    # ... while its luminance did change: the style went somewhere.
    assert float((rgb_to_ycbcr(kept)[:, 0] - rgb_to_ycbcr(content)[:, 0]).abs().mean()) > 0.02


def test_histogram_matching_gives_the_style_the_content_colours(content: torch.Tensor, style: torch.Tensor) -> None:
    recoloured = match_color(style, content)

    def stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = image[0].reshape(3, -1).double()
        return pixels.mean(dim=1), torch.cov(pixels, correction=0)

    mean, cov = stats(recoloured)
    target_mean, target_cov = stats(content)
    # Exact but for the clamp to [0, 1], which moves a few out-of-gamut pixels.
    torch.testing.assert_close(mean, target_mean, atol=0.01, rtol=0)
    torch.testing.assert_close(cov, target_cov, atol=0.003, rtol=0)
    assert float((stats(style)[0] - target_mean).abs().max()) > 0.05  # it was far off before


def test_histogram_transfer_result_is_nearer_the_content_colours(
    vgg: VGG16Features, content: torch.Tensor, style: torch.Tensor
) -> None:
    plain = StyleTransfer(vgg, content, [(style, 1.0)], params(iterations=20)).run()
    matched = StyleTransfer(vgg, content, [(style, 1.0)], params(iterations=20, color="histogram")).run()
    assert chroma_error(matched, content) < chroma_error(plain, content)


# --- checkpoints ----------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_a_restored_state_continues_the_interrupted_run(
    vgg: VGG16Features, content: torch.Tensor, style: torch.Tensor, optimizer: str
) -> None:
    p = params(optimizer=optimizer, iterations=16, scales=2)
    straight = StyleTransfer(vgg, content, [(style, 1.0)], p)
    straight.run()

    interrupted = StyleTransfer(vgg, content, [(style, 1.0)], p)
    run(interrupted, until=11)  # past the scale change, mid-history
    tensors, metadata = interrupted.state()
    resumed = StyleTransfer(vgg, content, [(style, 1.0)], p)
    resumed.load_state({k: v.clone() for k, v in tensors.items()}, dict(metadata))
    assert (resumed.step, resumed.scale) == (11, 1)
    assert [s.step for s in run(resumed)] == list(range(12, 17))
    assert math.isclose(resumed.losses().total, straight.losses().total, rel_tol=0.05)
    torch.testing.assert_close(resumed.current_image(), straight.current_image(), atol=2e-3, rtol=0)


def test_a_state_only_loads_into_the_same_job(vgg: VGG16Features, content: torch.Tensor, style: torch.Tensor) -> None:
    engine = StyleTransfer(vgg, content, [(style, 1.0)], params(iterations=4))
    run(engine, until=2)
    tensors, metadata = engine.state()
    other_params = StyleTransfer(vgg, content, [(style, 1.0)], params(iterations=5))
    with pytest.raises(StateMismatch, match="params"):
        other_params.load_state(tensors, metadata)
    other_inputs = StyleTransfer(vgg, content, [(style, 2.0)], params(iterations=4))
    with pytest.raises(StateMismatch, match="images"):
        other_inputs.load_state(tensors, metadata)
    with pytest.raises(StateMismatch, match="format"):
        engine.load_state(tensors, {**metadata, "format": "something/0"})
    with pytest.raises(StateMismatch):
        engine.load_state({}, metadata)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"content_layer": "relu9_9"}, "content_layer 'relu9_9' is not a VGG16 layer; valid: conv1_1, relu1_1"),
        ({"style_layers": ()}, "style_layers must name at least one layer"),
        ({"style_layers": (("pool9", 1.0),)}, "style_layers[0] 'pool9' is not a VGG16 layer"),
        ({"style_layers": (("relu1_1", 1.0), ("relu1_1", 1.0))}, "listed twice"),
        ({"style_layers": (("relu1_1", -1.0),)}, r"style_layers[0].weight must be in [0"),
        ({"style_layers": (("relu1_1", 0.0),)}, "must not all be 0"),
        ({"content_weight": math.nan}, "content_weight must be a finite number"),
        ({"style_weight": -1.0}, "style_weight must be in [0"),
        ({"tv_weight": math.inf}, "tv_weight must be a finite number"),
        ({"optimizer": "sgd"}, "optimizer 'sgd' is not one of: adam, lbfgs"),
        ({"learning_rate": 0.0}, "learning_rate must be in (0"),
        ({"init": "blank"}, "init 'blank' is not one of"),
        ({"color": "sepia"}, "color 'sepia' is not one of"),
        ({"iterations": 0}, "iterations must be in [1, 60]"),
        ({"iterations": 61}, "iterations must be in [1, 60]"),
        ({"max_size": 16}, "max_size must be in [32, 256]"),
        ({"max_size": 257}, "max_size must be in [32, 256]"),
        ({"scales": 0}, "scales must be in [1,"),
        ({"scales": 4, "max_size": 128}, "scales must be in [1, 3]"),
        ({"seed": -1}, "seed must be in [0,"),
    ],
)
def test_bad_params_name_the_field_and_range(vgg: VGG16Features, changes: dict[str, object], message: str) -> None:
    bad = dataclasses.replace(StyleParams(iterations=10, max_size=128), **changes)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as raised:
        validate(bad, 60, 256)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("styles", "message"),
    [
        ([], "styles must hold at least one style image"),
        ([(torch.rand(1, 3, 8, 8), -1.0)], "styles[0].weight must be in [0"),
        ([(torch.rand(1, 3, 8, 8), math.nan)], "styles[0].weight must be a finite number"),
        ([(torch.rand(1, 3, 8, 8), 0.0)], "must not all be 0"),
        ([(torch.rand(1, 1, 8, 8), 1.0)], "styles[0].image must be a float RGB tensor"),
    ],
)
def test_bad_style_images_are_refused(
    vgg: VGG16Features, content: torch.Tensor, styles: list[tuple[torch.Tensor, float]], message: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        StyleTransfer(vgg, content, styles, params(iterations=1))
    assert message in str(raised.value)


def test_params_survive_their_json_form() -> None:
    params = StyleParams(style_layers=(("relu2_1", 0.5), ("relu4_1", 2.0)), color="luminance", seed=2**63 + 5)
    assert params_from_json(params_to_json(params)) == params


def test_the_torch_free_layer_list_is_the_network_s(vgg: VGG16Features) -> None:
    from genserve.common.style_request import vgg16_layer_names

    assert vgg16_layer_names() == vgg.layer_names


def test_resize_keeps_the_image_when_the_size_matches() -> None:
    image = torch.rand(1, 3, 10, 12)
    assert resize(image, (10, 12)) is image
    assert resize(image, (5, 6)).shape == (1, 3, 5, 6)
