"""DeepDream on the real EfficientNet-Lite0 and VGG16: it climbs its objective, over octaves, reproducibly."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch

from genserve.common.errors import InvalidArgument
from genserve.vision.backbones import Backbone, EfficientNetLite0, VGG16Features
from genserve.vision.dream import (
    DEFAULT_LAYERS,
    DreamParams,
    DreamProgress,
    dream,
    fast_backbone,
    octave_sizes,
    validate,
)
from genserve.vision.samples import sample_image
from tests.vision.conftest import PACKAGE_CACHE, to_rgb_tensor


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return to_rgb_tensor(sample_image("chelsea", PACKAGE_CACHE).resize((96, 64)))


def checked(backbone: Backbone, params: DreamParams) -> DreamParams:
    """`params` as the service hands them to `dream`: validated for the backbone, its layers filled in."""
    return validate(params, backbone.architecture, backbone.layer_names)


def record(
    backbone: Backbone, image: torch.Tensor, params: DreamParams, guide: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[DreamProgress]]:
    seen: list[DreamProgress] = []
    result = dream(backbone, image, checked(backbone, params), guide, lambda progress, current: seen.append(progress))
    return result, seen


@pytest.mark.parametrize("which", ["lite0", "vgg"])
def test_the_objective_climbs_and_the_image_changes(
    which: str, request: pytest.FixtureRequest, photo: torch.Tensor
) -> None:
    backbone: Backbone = request.getfixturevalue(which)
    params = DreamParams(octaves=2, steps_per_octave=8, octave_scale=1.5)
    result, seen = record(backbone, photo, params)
    assert [(p.octave, p.step) for p in seen] == [(o, s) for o in range(2) for s in range(8)]
    assert [p.steps_done for p in seen] == list(range(1, 17)) and seen[-1].total_steps == 16
    for octave in range(2):
        losses = [p.loss for p in seen if p.octave == octave]
        assert losses[-1] > 1.5 * losses[0], losses  # gradient ascent: the objective rises within each octave
        assert sum(b > a for a, b in itertools.pairwise(losses)) >= len(losses) - 2
    assert result.shape == photo.shape and 0.0 <= float(result.min()) <= float(result.max()) <= 1.0
    assert float((result - photo).abs().mean()) > 0.02


def test_same_seed_same_dream_and_the_jitter_follows_the_seed(lite0: EfficientNetLite0, photo: torch.Tensor) -> None:
    params = checked(lite0, DreamParams(octaves=1, steps_per_octave=4, jitter=8, seed=11))
    first = dream(lite0, photo, params)
    assert torch.equal(first, dream(lite0, photo, params))
    assert not torch.equal(first, dream(lite0, photo, dataclasses.replace(params, seed=12)))


def test_max_loss_ends_each_octave_early(lite0: EfficientNetLite0, photo: torch.Tensor) -> None:
    _, free = record(lite0, photo, DreamParams(octaves=2, steps_per_octave=10))
    threshold = free[3].loss  # reached after a few steps of the first octave
    _, capped = record(lite0, photo, DreamParams(octaves=2, steps_per_octave=10, max_loss=threshold))
    assert len(capped) < len(free)
    assert all(p.loss <= threshold for p in capped)
    assert {p.octave for p in capped} <= {0, 1}


def test_a_guide_pulls_the_dream_towards_its_features(lite0: EfficientNetLite0, photo: torch.Tensor) -> None:
    guide = to_rgb_tensor(sample_image("coffee", PACKAGE_CACHE).resize((64, 48)))
    params = DreamParams(octaves=1, steps_per_octave=8)
    guided, seen = record(lite0, photo, params, guide)
    assert seen[-1].loss > seen[0].loss  # the guided objective (best-match similarity) rises
    assert not torch.equal(guided, dream(lite0, photo, checked(lite0, params)))  # another dream than the plain one


def test_a_raising_callback_stops_the_dream_at_that_step(lite0: EfficientNetLite0, photo: torch.Tensor) -> None:
    taken: list[int] = []

    def cancel_after_three(progress: DreamProgress, current: object) -> None:
        taken.append(progress.steps_done)
        if progress.steps_done == 3:
            raise TimeoutError("deadline")

    with pytest.raises(TimeoutError):
        dream(lite0, photo, checked(lite0, DreamParams(octaves=2, steps_per_octave=10)), on_step=cancel_after_three)
    assert taken == [1, 2, 3]


def test_previews_come_at_full_size(lite0: EfficientNetLite0, photo: torch.Tensor) -> None:
    shapes = []
    dream(
        lite0,
        photo,
        checked(lite0, DreamParams(octaves=3, steps_per_octave=1)),
        on_step=lambda p, current: shapes.append(current().shape),
    )
    assert shapes == [photo.shape] * 3


def test_octaves_shrink_by_the_scale_and_end_at_the_image_size() -> None:
    assert octave_sizes(100, 200, 3, 2.0) == [(25, 50), (50, 100), (100, 200)]
    assert octave_sizes(10, 10, 8, 2.0)[0] == (1, 1)


def test_the_folded_backbone_computes_the_same_activations(lite0: EfficientNetLite0, photo: torch.Tensor) -> None:
    fast = fast_backbone(lite0)
    assert fast is fast_backbone(lite0)  # built once
    # Every batch norm the blocks and the stem had is folded away (only the head's is left).
    norms = [name for name, module in fast.named_modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert norms == ["_bn1"], norms
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.modules()) > 30, "the original keeps its own"
    names = ["stem", "blocks.4", "blocks.15"]
    with torch.no_grad():
        ours = fast.features(lite0.preprocess(photo).contiguous(memory_format=torch.channels_last), names)
        reference = lite0.features(lite0.preprocess(photo), names)
    for name in names:
        torch.testing.assert_close(ours[name], reference[name], atol=1e-4, rtol=1e-4)


def test_default_layers_exist_in_their_backbones(lite0: EfficientNetLite0, vgg: VGG16Features) -> None:
    for name, backbone in (("efficientnet-lite0", lite0), ("vgg16", vgg)):
        assert validate(DreamParams(), name, backbone.layer_names).layers == DEFAULT_LAYERS[name]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"layers": (("blocks.99", 1.0),)}, "layers[0] 'blocks.99' is not a layer of efficientnet-lite0; valid: stem"),
        ({"layers": (("stem", 0.0),)}, "layers[0].weight must be in (0, 1000]"),
        ({"layers": (("stem", math.nan),)}, "layers[0].weight must be a finite number"),
        ({"layers": (("stem", 1.0), ("stem", 2.0))}, "listed twice"),
        ({"octaves": 0}, "octaves must be in [1, 8]"),
        ({"octaves": 9}, "octaves must be in [1, 8]"),
        ({"octave_scale": 1.0}, "octave_scale must be in (1"),
        ({"octave_scale": math.inf}, "octave_scale must be a finite number"),
        ({"steps_per_octave": 201}, "steps_per_octave must be in [1, 200]"),
        ({"step_size": -0.1}, "step_size must be in (0"),
        ({"step_size": math.nan}, "step_size must be a finite number"),
        ({"max_loss": 0.0}, "max_loss must be in (0"),
        ({"jitter": 65}, "jitter must be in [0, 64]"),
        ({"seed": -1}, "seed must be in [0,"),
    ],
)
def test_bad_params_name_the_field_and_range(
    lite0: EfficientNetLite0, changes: dict[str, object], message: str
) -> None:
    bad = dataclasses.replace(DreamParams(), **changes)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as raised:
        validate(bad, "efficientnet-lite0", lite0.layer_names)
    assert message in str(raised.value)


def test_images_must_be_rgb_batches_of_one(lite0: EfficientNetLite0) -> None:
    with pytest.raises(InvalidArgument, match="image must be a float RGB tensor"):
        dream(lite0, torch.rand(1, 4, 16, 16), checked(lite0, DreamParams(octaves=1, steps_per_octave=1)))
    with pytest.raises(InvalidArgument, match="guide must be a float RGB tensor"):
        params = checked(lite0, DreamParams(octaves=1, steps_per_octave=1))
        dream(lite0, torch.rand(1, 3, 16, 16), params, torch.rand(3, 16, 16))
