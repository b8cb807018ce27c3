"""Dream and style preview over HTTP against a real vision service and gateway, with a plain HTTP
client: uploads as JSON and as multipart, the answer as PNG, JSON or SSE (with previews), errors
naming the field, and a client that leaves cancelling the dream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.client.conftest import VISION_ENV
from tests.conftest import wait_for
from tests.http.families import AUTH, FamilyStack, b64, decoded_png, error_of, family_stack, photo_png, sse_events
from tests.http.test_completions import gauge

VISION_SERVICE = "genserve.v1.VisionService"
SMALL_DREAM = {"octaves": 2, "steps_per_octave": 2, "max_size": 48, "seed": 3}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FamilyStack]:
    with family_stack("vision", tmp_path_factory.mktemp("http-vision"), VISION_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def http(stack: FamilyStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http.url, headers=AUTH, timeout=60) as client:
        yield client


def test_a_dream_streams_progress_with_previews_then_the_result(http: httpx.Client) -> None:
    body = {"image": b64(photo_png()), **SMALL_DREAM, "preview_every": 1}
    with http.stream("POST", "/v1/vision/dream", json=body, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response.iter_lines()))
    kinds = [item.event for item in events]
    assert kinds == ["progress"] * 4 + ["result"], kinds
    progress = [item.data for item in events[:-1]]
    assert [item["steps_done"] for item in progress] == [1, 2, 3, 4] and progress[-1]["total_steps"] == 4
    assert [item["octave"] for item in progress] == [0, 0, 1, 1] and all(item["seed"] == 3 for item in progress)
    previews = [item["preview"] for item in progress]
    assert all(preview is not None for preview in previews)
    last_preview = decoded_png(previews[-1]["png"])
    assert last_preview.size == (previews[-1]["width"], previews[-1]["height"])
    result = events[-1].data
    image = decoded_png(result["image"]["png"])
    assert image.size == (result["image"]["width"], result["image"]["height"]) == (48, 36) and result["seed"] == 3


def test_a_dream_is_a_png_by_default_from_json_or_multipart(http: httpx.Client) -> None:
    photo = photo_png()
    from_json = http.post("/v1/vision/dream", json={"image": b64(photo), **SMALL_DREAM})
    assert from_json.status_code == 200 and from_json.headers["content-type"] == "image/png"
    assert from_json.headers["x-genserve-seed"] == "3"
    assert decoded_png(from_json.content).size == (48, 36)
    assert (from_json.headers["x-genserve-width"], from_json.headers["x-genserve-height"]) == ("48", "36")
    form = {name: str(value) for name, value in SMALL_DREAM.items()}
    from_form = http.post("/v1/vision/dream", files={"image": ("photo.png", photo, "image/png")}, data=form)
    assert from_form.status_code == 200 and from_form.content == from_json.content
    as_json = http.post(
        "/v1/vision/dream", json={"image": b64(photo), **SMALL_DREAM}, headers={"Accept": "application/json"}
    )
    assert as_json.status_code == 200 and as_json.json()["seed"] == 3
    assert decoded_png(as_json.json()["image"]["png"]).tobytes() == decoded_png(from_json.content).tobytes()
    data_url = "data:image/png;base64," + b64(photo)
    assert http.post("/v1/vision/dream", json={"image": data_url, **SMALL_DREAM}).content == from_json.content


def test_a_style_preview_takes_several_styles_as_files_or_base64(http: httpx.Client) -> None:
    photo, style = photo_png(), photo_png(24, 24)
    options = {"iterations": 2, "max_size": 32, "seed": 4}
    files = [("content", ("c.png", photo, "image/png")), ("style", ("a.png", style, "image/png"))]
    files.append(("style", ("b.png", photo_png(16, 16), "image/png")))
    form = {**{name: str(value) for name, value in options.items()}, "style_weights": "[1, 0.5]"}
    from_form = http.post("/v1/vision/style-preview", files=files, data=form)
    assert from_form.status_code == 200, from_form.text
    assert max(decoded_png(from_form.content).size) == 32 and from_form.headers["x-genserve-seed"] == "4"
    body = {"content": b64(photo), "styles": [b64(style), b64(photo_png(16, 16))], "style_weights": [1, 0.5]}
    from_json = http.post("/v1/vision/style-preview", json={**body, **options})
    assert from_json.content == from_form.content
    headers = {"Accept": "text/event-stream"}
    with http.stream("POST", "/v1/vision/style-preview", json={**body, **options}, headers=headers) as response:
        events = list(sse_events(response.iter_lines()))
    assert [item.event for item in events] == ["progress", "progress", "result"]
    assert events[1].data["step"] == 2 and events[1].data["losses"]["total"] > 0


def test_refusals_are_400s_naming_the_field(stack: FamilyStack, http: httpx.Client) -> None:
    photo = b64(photo_png())

    def refused(response: httpx.Response, status: int, param: str | None) -> dict[str, object]:
        error = error_of(response)
        assert response.status_code == status and error["param"] == param, (response.status_code, error)
        return error

    service = refused(http.post("/v1/vision/dream", json={"image": photo, "octaves": 99}), 400, "octaves")
    assert "[1, 8]" in str(service["message"]) and service["type"] == "invalid_request_error"
    refused(http.post("/v1/vision/dream", data={"octaves": "many"}, files={"image": b"x"}), 400, "octaves")
    refused(http.post("/v1/vision/dream", json={"image": "not base64!"}), 400, "image")
    unreadable = refused(http.post("/v1/vision/dream", files={"image": ("a.png", b"hello")}), 400, "image")
    assert "not a readable image" in str(unreadable["message"])
    refused(http.post("/v1/vision/dream", json={"image": photo, "octaves_": 2}), 400, "octaves_")
    refused(http.post("/v1/vision/dream", json={"octaves": 2}), 400, "image")
    styles = [("content", ("c.png", photo_png())), ("style", ("a.png", photo_png())), ("style", ("b.png", b"??"))]
    form_style = refused(http.post("/v1/vision/style-preview", files=styles), 400, "style[1]")
    assert str(form_style["message"]).startswith("style[1] is not a readable image")
    two = {"content": photo, "styles": [photo, photo]}
    refused(http.post("/v1/vision/style-preview", json={**two, "style_weights": [1]}), 400, "style_weights")
    negative = http.post("/v1/vision/style-preview", json={**two, "style_weights": [1, -2]})
    assert str(refused(negative, 400, "style_weights[1]")["message"]).startswith("style_weights[1] must be >= 0")
    refused(http.post("/v1/vision/style-preview", json={**two, "optimizer": "sgd"}), 400, "optimizer")
    text = http.post("/v1/vision/dream", content=b"hi", headers={"Content-Type": "text/plain"})
    assert refused(text, 415, "Content-Type")["code"] == "unsupported_media_type"
    refused(http.post("/v1/vision/dream", json={"image": photo}, headers={"Accept": "text/html"}), 406, "Accept")
    anonymous = httpx.post(stack.url("/v1/vision/dream"), json={"image": photo, **SMALL_DREAM}, timeout=30)
    refused(anonymous, 401, None)


def test_a_client_that_leaves_a_dream_stream_stops_the_dream(stack: FamilyStack, http: httpx.Client) -> None:
    def dreaming() -> float:
        return gauge(stack.backend, "genserve_requests_in_flight", service=VISION_SERVICE)

    body = {"image": b64(photo_png()), "octaves": 1, "steps_per_octave": 200, "max_size": 64, "seed": 1}
    with http.stream("POST", "/v1/vision/dream", json=body, headers={"Accept": "text/event-stream"}) as response:
        # The iterator is kept: leaving a loop over it would close it, and the connection with it.
        events = sse_events(response.iter_lines())
        assert next(events).event == "progress" and next(events).data["steps_done"] == 2
        assert dreaming() == 1, "the dream is running"
    left = time.monotonic()
    assert wait_for(lambda: dreaming() == 0, 3.0), "the dream went on after the client left"
    assert time.monotonic() - left < 3.0
