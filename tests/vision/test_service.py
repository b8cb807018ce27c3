"""VisionService through the gateway, over real sockets, on the real converted backbones."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from typer.testing import CliRunner

from genserve.cli import app
from genserve.testing import ServerProcess
from genserve.v1 import common_pb2, models_pb2, models_pb2_grpc, vision_pb2, vision_pb2_grpc
from genserve.vision.samples import sample_image
from tests.common.test_images import png_declaring
from tests.conftest import ROOT, behind_gateway, wait_for

CACHE = ROOT / "var" / "packages"
VISION_ENV = {
    "GENSERVE_VISION_CONCURRENCY": "1",
    "GENSERVE_VISION_MAX_WAITING": "1",
    "GENSERVE_VISION_DREAM_MAX_SIZE": "160",
    "GENSERVE_VISION_PREVIEW_MAX_SIZE": "64",
    "GENSERVE_VISION_PREVIEW_MAX_STEPS": "12",
    "GENSERVE_MAX_IMAGE_PIXELS": "4000000",
}


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with behind_gateway("vision", tmp_path_factory.mktemp("vision"), VISION_ENV) as processes:
        yield processes


@pytest.fixture(scope="module")
def stub(vision: tuple[ServerProcess, ServerProcess]) -> Iterator[vision_pb2_grpc.VisionServiceStub]:
    with grpc.insecure_channel(vision[1].address) as channel:
        yield vision_pb2_grpc.VisionServiceStub(channel)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cat() -> bytes:
    return png(sample_image("chelsea", CACHE).resize((96, 64)))


@pytest.fixture(scope="module")
def hubble() -> bytes:
    return png(sample_image("hubble", CACHE).resize((64, 64)))


def small_dream(cat: bytes, **fields: object) -> vision_pb2.DreamRequest:
    values: dict[str, object] = {"octaves": 2, "steps_per_octave": 3, "seed": 7}
    values.update(fields)
    return vision_pb2.DreamRequest(image=common_pb2.Image(data=cat), **values)  # type: ignore[arg-type]


def decode(image: common_pb2.Image) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), dtype=np.float64)


def test_a_dream_streams_progress_previews_and_a_changed_image(
    stub: vision_pb2_grpc.VisionServiceStub, cat: bytes
) -> None:
    events = list(stub.Dream(small_dream(cat, preview_every=2), timeout=120))
    progress = [e for e in events if e.total_steps]
    assert [e.steps_done for e in progress] == list(range(1, 7))
    assert progress[0].total_steps == 6 and {e.octave for e in progress} == {0, 1}
    assert [bool(e.HasField("preview")) for e in progress] == [False, True, False, True, False, True]
    result = events[-1].result
    assert (result.width, result.height, result.mime_type) == (96, 64, "image/png")
    before = np.asarray(Image.open(io.BytesIO(cat)).convert("RGB"), dtype=np.float64)
    assert np.abs(decode(result) - before).mean() > 2.0, "the dream must change the image"
    assert events[-1].seed == 7


def test_the_dream_objective_rises_within_an_octave(stub: vision_pb2_grpc.VisionServiceStub, cat: bytes) -> None:
    events = [e for e in stub.Dream(small_dream(cat, octaves=1, steps_per_octave=6), timeout=120) if e.total_steps]
    losses = [e.loss for e in events]
    assert losses[-1] > losses[0]


def test_same_seed_same_png_and_another_seed_differs(stub: vision_pb2_grpc.VisionServiceStub, cat: bytes) -> None:
    def result(seed: int) -> bytes:
        return list(stub.Dream(small_dream(cat, jitter=8, seed=seed), timeout=120))[-1].result.data

    first, again, other = result(3), result(3), result(4)
    assert first == again
    assert first != other


def gauge(vision: tuple[ServerProcess, ServerProcess], which: str) -> float:
    found = re.search(rf'^genserve_work_{which}\{{service="vision"\}} (\S+)$', vision[0].metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def running(vision: tuple[ServerProcess, ServerProcess]) -> float:
    return gauge(vision, "running")


def test_cancel_stops_the_dream_within_a_step_and_frees_the_slot(
    stub: vision_pb2_grpc.VisionServiceStub, vision: tuple[ServerProcess, ServerProcess], cat: bytes
) -> None:
    call = stub.Dream(small_dream(cat, octaves=3, steps_per_octave=200), timeout=120)
    first = next(call)
    assert first.total_steps == 600 and running(vision) == 1
    call.cancel()
    assert wait_for(lambda: running(vision) == 0, timeout=5)
    assert list(stub.Dream(small_dream(cat), timeout=120))[-1].HasField("result"), "the slot is free again"


def wait_until_idle(vision: tuple[ServerProcess, ServerProcess], timeout: float = 60) -> None:
    def idle() -> bool:
        text = vision[0].metrics()
        busy = re.findall(r'^genserve_work_(?:running|waiting)\{service="vision"\} (\S+)$', text, re.M)
        return bool(busy) and all(float(value) == 0 for value in busy)

    assert wait_for(idle, timeout), "the vision service did not become idle"


def test_a_full_queue_gives_resource_exhausted(
    stub: vision_pb2_grpc.VisionServiceStub, vision: tuple[ServerProcess, ServerProcess], cat: bytes
) -> None:
    long = small_dream(cat, octaves=3, steps_per_octave=200)
    running_call = stub.Dream(long, timeout=120)
    next(running_call)  # it holds the slot
    calls = [running_call, stub.Dream(long, timeout=120)]  # the second waits
    assert wait_for(lambda: gauge(vision, "waiting") >= 1, timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Dream(small_dream(cat), timeout=30))
    for call in calls:
        call.cancel()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1 running and 1 waiting" in info.value.details()
    wait_until_idle(vision)  # the next test must find the slots free


INVALID, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
L = common_pb2.LayerWeight
DREAM_CASES = [
    ("undecodable image", {"image": common_pb2.Image(data=b"not an image")}, INVALID, "image is not a readable image"),
    ("empty image", {"image": common_pb2.Image()}, INVALID, "image is empty"),
    (
        "pixel bomb",
        {"image": common_pb2.Image(data=png_declaring(50_000, 50_000))},
        EXHAUSTED,
        "the limit is 4,000,000",
    ),
    ("bad guide", {"guide": common_pb2.Image(data=b"junk")}, INVALID, "guide is not a readable image"),
    ("zero-size image", {"image": common_pb2.Image(data=png_declaring(0, 64))}, INVALID, "image is not a readable"),
    ("unknown backbone", {"backbone": "resnet"}, INVALID, "backbone 'resnet' is not one of: efficientnet-lite0, vgg16"),
    ("unknown layer", {"layers": [L(layer="blocks.99")]}, INVALID, "blocks.99"),
    ("NaN layer weight", {"layers": [L(layer="blocks.5", weight=float("nan"))]}, INVALID, "layers[0].weight"),
    ("negative layer weight", {"layers": [L(layer="blocks.5", weight=-1)]}, INVALID, "layers[0].weight must be >= 0"),
    ("too many octaves", {"octaves": 9}, INVALID, "octaves"),
    ("octave scale", {"octave_scale": 3.0}, INVALID, "octave_scale"),
    ("too many steps", {"steps_per_octave": 500}, INVALID, "steps_per_octave"),
    ("step size", {"step_size": 2.0}, INVALID, "step_size"),
    ("NaN step size", {"step_size": float("nan")}, INVALID, "step_size"),
    ("jitter", {"jitter": 100}, INVALID, "jitter"),
    ("max size over the limit", {"max_size": 5000}, INVALID, "max_size must be in [16, 160]"),
    ("preview interval", {"preview_every": -1}, INVALID, "preview_every"),
]


@pytest.mark.parametrize(("name", "fields", "code", "message"), DREAM_CASES, ids=[c[0] for c in DREAM_CASES])
def test_bad_dream_input(
    stub: vision_pb2_grpc.VisionServiceStub,
    cat: bytes,
    name: str,
    fields: dict[str, object],
    code: grpc.StatusCode,
    message: str,
) -> None:
    request = small_dream(cat)
    for key, value in fields.items():
        if isinstance(value, list):
            request.ClearField(key)  # type: ignore[arg-type]
            getattr(request, key).extend(value)
        elif isinstance(value, common_pb2.Image):
            getattr(request, key).CopyFrom(value)
        else:
            setattr(request, key, value)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Dream(request, timeout=30))
    assert info.value.code() == code
    assert message in info.value.details()


def test_a_truncated_image_is_invalid(stub: vision_pb2_grpc.VisionServiceStub, cat: bytes) -> None:
    request = small_dream(cat)
    request.image.data = cat[: len(cat) // 2]
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Dream(request, timeout=30))
    assert info.value.code() == INVALID and "image is truncated or corrupt" in info.value.details()


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "L", "I;16", "CMYK"])
def test_palette_alpha_grey_and_16_bit_images_are_converted(stub: vision_pb2_grpc.VisionServiceStub, mode: str) -> None:
    photo = sample_image("chelsea", CACHE).resize((48, 32))
    converted = photo.convert("L").convert("I;16") if mode == "I;16" else photo.convert(mode)
    data = io.BytesIO()
    converted.save(data, format="JPEG" if mode == "CMYK" else "PNG")
    request = small_dream(b"", octaves=1, steps_per_octave=1)
    request.image.data = data.getvalue()
    result = list(stub.Dream(request, timeout=60))[-1].result
    assert (result.width, result.height) == (48, 32)


def test_a_passed_deadline_stops_the_dream_and_frees_the_slot(
    stub: vision_pb2_grpc.VisionServiceStub, vision: tuple[ServerProcess, ServerProcess], cat: bytes
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Dream(small_dream(cat, octaves=3, steps_per_octave=200), timeout=1.5))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(lambda: running(vision) == 0, timeout=5)


def test_health_answers_while_a_dream_runs(
    stub: vision_pb2_grpc.VisionServiceStub, vision: tuple[ServerProcess, ServerProcess], cat: bytes
) -> None:
    call = stub.Dream(small_dream(cat, octaves=3, steps_per_octave=200), timeout=120)
    try:
        next(call)
        with grpc.insecure_channel(vision[0].address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            started = time.monotonic()
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - started < 1.0
        assert running(vision) == 1
    finally:
        call.cancel()
        wait_until_idle(vision)


def style_request(cat: bytes, hubble: bytes, **params: object) -> vision_pb2.StyleTransferRequest:
    return vision_pb2.StyleTransferRequest(
        content=common_pb2.Image(data=cat),
        styles=[vision_pb2.StyleImage(image=common_pb2.Image(data=hubble))],
        params=vision_pb2.StyleParams(**params),  # type: ignore[arg-type]
        seed=1,
    )


def test_a_style_preview_lowers_its_loss_and_returns_an_image(
    stub: vision_pb2_grpc.VisionServiceStub, cat: bytes, hubble: bytes
) -> None:
    events = list(stub.StylePreview(style_request(cat, hubble, preview_every=4), timeout=180))
    progress = [e for e in events if e.total_steps]
    assert progress[-1].step == progress[-1].total_steps == 12
    assert progress[-1].losses.total < progress[0].losses.total
    assert sum(e.HasField("preview") for e in progress) == 3
    result = events[-1].result
    assert max(result.width, result.height) == 64


def test_zero_loss_weights_are_honoured(stub: vision_pb2_grpc.VisionServiceStub, cat: bytes, hubble: bytes) -> None:
    request = style_request(cat, hubble, content_weight=0.0, tv_weight=0.0, iterations=3)
    progress = [e for e in stub.StylePreview(request, timeout=60) if e.total_steps]
    assert all(e.losses.content == 0 and e.losses.tv == 0 and e.losses.style > 0 for e in progress)


STYLE_CASES = [
    ("too many steps for a preview", {"iterations": 500}, "submit bigger runs as jobs"),
    ("too large for a preview", {"max_size": 1024}, "submit bigger runs as jobs"),
    ("NaN content weight", {"content_weight": float("nan")}, "content_weight"),
    ("negative style weight", {"style_weight": -1.0}, "style_weight must be in [0, 1e+09]"),
    ("style weight over the range", {"style_weight": 1e10}, "style_weight must be in [0, 1e+09]"),
    ("too many scales", {"scales": 5}, "scales must be in [1, 2]"),
    ("NaN learning rate", {"learning_rate": float("nan")}, "learning_rate"),
    ("unknown content layer", {"content_layer": "relu9_9"}, "relu9_9"),
    ("unknown optimizer value", {"optimizer": 7}, "params.optimizer"),
]


@pytest.mark.parametrize(("name", "params", "message"), STYLE_CASES, ids=[c[0] for c in STYLE_CASES])
def test_bad_style_preview_input(
    stub: vision_pb2_grpc.VisionServiceStub,
    cat: bytes,
    hubble: bytes,
    name: str,
    params: dict[str, object],
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StylePreview(style_request(cat, hubble, **params), timeout=30))
    assert info.value.code() == INVALID
    assert message in info.value.details()


STYLE_IMAGE_CASES = [
    ("undecodable style", [vision_pb2.StyleImage(image=common_pb2.Image(data=b"junk"))], "styles[0].image"),
    (
        "style pixel bomb",
        [vision_pb2.StyleImage(image=common_pb2.Image(data=png_declaring(50_000, 50_000)))],
        "styles[0].image",
    ),
    ("negative blend weight", [vision_pb2.StyleImage(weight=-1.0)], "styles[0].weight must be >= 0"),
    ("NaN blend weight", [vision_pb2.StyleImage(weight=float("nan"))], "styles[0].weight must be a finite number"),
]


@pytest.mark.parametrize(("name", "styles", "message"), STYLE_IMAGE_CASES, ids=[c[0] for c in STYLE_IMAGE_CASES])
def test_bad_style_images(
    stub: vision_pb2_grpc.VisionServiceStub,
    cat: bytes,
    hubble: bytes,
    name: str,
    styles: list[vision_pb2.StyleImage],
    message: str,
) -> None:
    request = style_request(cat, hubble)
    for style in styles:
        if not style.HasField("image"):
            style.image.data = hubble
    request.ClearField("styles")
    request.styles.extend(styles)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StylePreview(request, timeout=30))
    assert info.value.code() in (INVALID, EXHAUSTED)
    assert message in info.value.details()


def test_a_style_preview_needs_a_style(stub: vision_pb2_grpc.VisionServiceStub, cat: bytes) -> None:
    request = vision_pb2.StyleTransferRequest(content=common_pb2.Image(data=cat))
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StylePreview(request, timeout=30))
    assert info.value.code() == INVALID and "at least one style image" in info.value.details()


def test_describe_model_lists_layer_names(vision: tuple[ServerProcess, ServerProcess]) -> None:
    with grpc.insecure_channel(vision[1].address) as channel:
        catalog = models_pb2_grpc.ModelServiceStub(channel)
        vgg = catalog.DescribeModel(models_pb2.DescribeModelRequest(name="vgg16"), timeout=30)
        lite = catalog.DescribeModel(models_pb2.DescribeModelRequest(name="efficientnet-lite0"), timeout=30)
    assert {"relu1_1", "relu4_2", "relu5_1"} <= set(vgg.layers)
    assert "blocks.10" in lite.layers and lite.is_default and lite.family == "vision"


def test_the_client_commands_write_the_pngs(
    vision: tuple[ServerProcess, ServerProcess], cat: bytes, hubble: bytes, tmp_path: Path
) -> None:
    (tmp_path / "cat.png").write_bytes(cat)
    (tmp_path / "hubble.png").write_bytes(hubble)
    address = ["--address", vision[1].address]
    runner = CliRunner()
    dreamed = runner.invoke(
        app,
        ["client", "dream", str(tmp_path / "cat.png"), str(tmp_path / "dream.png"), "--octaves", "1", "--steps", "2",
         "--preview-every", "1", "--seed", "1", *address],
    )  # fmt: skip
    assert dreamed.exit_code == 0, dreamed.output
    assert Image.open(tmp_path / "dream.png").size == (96, 64) and (tmp_path / "dream.preview.png").exists()
    styled = runner.invoke(
        app,
        ["client", "style-preview", str(tmp_path / "cat.png"), str(tmp_path / "styled.png"),
         "--style", f"{tmp_path / 'hubble.png'}:2", "--iterations", "2", "--max-size", "48", "--tv-weight", "0",
         "--color", "luminance", *address],
    )  # fmt: skip
    assert styled.exit_code == 0, styled.output
    assert Image.open(tmp_path / "styled.png").size == (48, 32)
    refused = runner.invoke(
        app, ["client", "style-preview", str(tmp_path / "cat.png"), str(tmp_path / "x.png"),
              "--style", str(tmp_path / "hubble.png"), "--iterations", "500", *address],
    )  # fmt: skip
    assert refused.exit_code == 1 and "INVALID_ARGUMENT" in refused.output and "JobService" in refused.output
    wrong = runner.invoke(
        app, ["client", "style-preview", str(tmp_path / "cat.png"), str(tmp_path / "x.png"),
              "--style", str(tmp_path / "hubble.png"), "--color", "sepia", *address],
    )  # fmt: skip
    assert wrong.exit_code != 0 and "luminance" in wrong.output
