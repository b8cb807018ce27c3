"""Image uploads refused by the front door itself, in process (no gateway behind it): the body
limit on forms, what is neither JSON nor a form, an Accept no answer fits, and form fields that
cannot be read, each named as the client sent it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.http.families import error_of
from tests.http.test_app import app_client


@pytest.fixture
def client() -> Iterator[TestClient]:
    with app_client(max_body_bytes=2000)[0] as started:
        yield started


def refused(response: object, status: int, param: str | None) -> dict[str, object]:
    error = error_of(response)
    assert (response.status_code, error["param"]) == (status, param), error  # type: ignore[attr-defined]
    return error


def test_a_form_over_the_body_limit_is_413(client: TestClient) -> None:
    big = client.post("/v1/vision/dream", files={"image": ("a.png", b"x" * 5000)})
    assert refused(big, 413, None)["code"] == "body_too_large"
    styles = [("content", ("c.png", b"x" * 900)), ("style", ("a.png", b"x" * 900)), ("style", ("b.png", b"x" * 900))]
    assert client.post("/v1/jobs", files=styles).status_code == 413


def test_bodies_that_are_not_json_or_a_form_and_answers_nobody_accepts(client: TestClient) -> None:
    text = client.post("/v1/vision/dream", content=b"hi", headers={"Content-Type": "text/plain"})
    assert refused(text, 415, "Content-Type")["code"] == "unsupported_media_type"
    html = client.post("/v1/vision/style-preview", json={}, headers={"Accept": "text/html"})
    assert refused(html, 406, "Accept")["code"] == "not_acceptable"
    result = client.get("/v1/jobs/some-id/result", headers={"Accept": "text/event-stream"})
    refused(result, 406, "Accept")
    broken = client.post("/v1/vision/dream", content=b"{", headers={"Content-Type": "application/json"})
    assert refused(broken, 400, None)["code"] == "invalid_json"


def test_fields_are_named_as_sent_in_json_and_in_forms(client: TestClient) -> None:
    refused(client.post("/v1/vision/dream", json={"image": "a!b"}), 400, "image")
    refused(client.post("/v1/vision/style-preview", json={"content": "AAAA", "styles": ["AAAA", 3]}), 400, "styles[1]")
    refused(client.post("/v1/vision/style-preview", json={"content": "AAAA"}), 400, "styles")
    form = [("content", ("c.png", b"c")), ("style", ("s.png", b"s"))]
    refused(client.post("/v1/jobs", files=form, data={"style_weights": "[1,"}), 400, "style_weights")
    refused(client.post("/v1/jobs", files=form, data={"iterations": "many"}), 400, "iterations")
    twice = client.post("/v1/vision/dream", files=[("image", ("a.png", b"a")), ("image", ("b.png", b"b"))])
    assert "given 2 times" in str(refused(twice, 400, "image")["message"])
    refused(client.post("/v1/vision/style-preview", files=[("content", ("c.png", b"c"))]), 400, "style")
    unknown = client.post("/v1/vision/dream", files={"image": ("a.png", b"a")}, data={"octave": "3"})
    assert refused(unknown, 400, "octave")["code"] == "unknown_parameter"
    one_style = {"content": "AAAA", "styles": ["AAAA"], "style_weights": [1, 2]}
    refused(client.post("/v1/vision/style-preview", json=one_style), 400, "style_weights")
    refused(client.post("/v1/latent/interpolate", json={"start": [0.5], "end": {"x": 1}}), 400, "end")
