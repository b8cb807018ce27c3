"""The latent routes over HTTP against a real latent service and gateway: sample, encode, decode,
interpolate, manifold and arithmetic round trips, and concepts from creation to deletion."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.client.conftest import LATENT_2D, LATENT_MODEL
from tests.http.families import AUTH, FamilyStack, decoded_png, error_of, family_stack

LATENT_ENV = {"GENSERVE_LATENT_MODELS": f"{LATENT_MODEL},{LATENT_2D}", "GENSERVE_TORCH_THREADS": "1"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FamilyStack]:
    with family_stack("latent", tmp_path_factory.mktemp("http-latent"), LATENT_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def http(stack: FamilyStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http.url, headers=AUTH, timeout=60) as client:
        yield client


def post(http: httpx.Client, path: str, **body: Any) -> dict[str, Any]:
    response = http.post(path, json={"model": LATENT_MODEL, **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.fixture(scope="module")
def drawn(http: httpx.Client) -> dict[str, Any]:
    return post(http, "/v1/latent/sample", n=3, seed=5, return_latents=True)


def test_sample_then_decode_gives_the_same_images(http: httpx.Client, drawn: dict[str, Any]) -> None:
    assert drawn["model"] == LATENT_MODEL and drawn["seed"] == 5 and len(drawn["images"]) == 3
    assert np.asarray(drawn["latents"]).shape == (3, 16)
    first = drawn["images"][0]
    assert decoded_png(first["png"]).size == (first["width"], first["height"]) == (28, 28)
    assert post(http, "/v1/latent/sample", n=3, seed=5)["images"] == drawn["images"]
    assert post(http, "/v1/latent/sample", n=1, seed=5)["latents"] is None
    decoded = post(http, "/v1/latent/decode", latents=drawn["latents"])
    assert decoded["images"] == drawn["images"] and decoded["latents"] is None


def test_encode_then_interpolate_and_arithmetic(http: httpx.Client, drawn: dict[str, Any]) -> None:
    images = [image["png"] for image in drawn["images"]]
    encoded = post(http, "/v1/latent/encode", images=images[:2])
    means = np.asarray(encoded["means"])
    assert means.shape == (2, 16) and np.asarray(encoded["log_variances"]).shape == (2, 16)
    # An image's posterior mean lies near the point it was decoded from (the VAE round trip).
    assert np.linalg.norm(means[0] - drawn["latents"][0]) < np.linalg.norm(drawn["latents"][0]) + 1
    walk = post(http, "/v1/latent/interpolate", start=drawn["latents"][0], end=images[1], steps=4, method="lerp")
    assert len(walk["images"]) == len(walk["latents"]) == 4
    assert walk["latents"][0] == pytest.approx(drawn["latents"][0], abs=1e-5)
    assert walk["latents"][-1] == pytest.approx(encoded["means"][1], abs=1e-4)
    a, b, c = drawn["latents"]
    moved = post(http, "/v1/latent/arithmetic", a=a, b=b, c=c)
    expected = np.asarray(a) - np.asarray(b) + np.asarray(c)
    assert moved["latents"][0] == pytest.approx(expected.tolist(), abs=1e-4) and len(moved["images"]) == 1
    grid = post(http, "/v1/latent/manifold", model=LATENT_2D, grid_size=3)
    assert grid["grid_size"] == 3 and decoded_png(grid["images"][0]["png"]).size == (84, 84)


def test_concepts_are_created_listed_applied_and_deleted(http: httpx.Client, drawn: dict[str, Any]) -> None:
    images = [image["png"] for image in drawn["images"]]
    examples = {"positives": images[:1], "negatives": images[1:]}
    created = post(http, "/v1/latent/concepts", name="http-test", description="first vs rest", **examples)
    assert (created["name"], created["source"]) == ("http-test", "user")
    assert (created["positives"], created["negatives"]) == (1, 2)
    listed = http.get("/v1/latent/concepts", params={"model": LATENT_MODEL}).json()["concepts"]
    assert "http-test" in [concept["name"] for concept in listed]
    assert {"label", "user"} <= {concept["source"] for concept in listed}
    edits = post(http, "/v1/latent/concepts/http-test/apply", point=drawn["latents"][1], strengths=[0, 1])
    assert len(edits["images"]) == 2 and edits["latents"][0] == pytest.approx(drawn["latents"][1], abs=1e-5)
    deleted = http.delete("/v1/latent/concepts/http-test", params={"model": LATENT_MODEL})
    assert deleted.status_code == 200 and deleted.json()["name"] == "http-test"
    gone = http.post("/v1/latent/concepts/http-test/apply", json={"model": LATENT_MODEL, "point": drawn["latents"][1]})
    error = error_of(gone)
    assert gone.status_code == 404 and (error["param"], error["code"]) == ("name", "concept_not_found")
    again = http.delete("/v1/latent/concepts/http-test", params={"model": LATENT_MODEL})
    assert again.status_code == 404 and error_of(again)["param"] == "name"


def test_refusals_name_the_field(http: httpx.Client, drawn: dict[str, Any]) -> None:
    unknown = http.post("/v1/latent/sample", json={"model": "no-such-vae"})
    assert unknown.status_code == 404 and (error_of(unknown)["param"], error_of(unknown)["code"]) == (
        "model",
        "model_not_found",
    )
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "/v1/latent/sample": ({"temperature": 9}, "temperature"),
        "/v1/latent/decode": ({"latents": [[0.0] * 3]}, "latents[0]"),
        "/v1/latent/interpolate": ({"start": [0.0] * 16, "end": [1.0] * 7}, "end"),
        "/v1/latent/arithmetic": ({"a": "bm90IGFuIGltYWdl", "b": [0.0] * 16, "c": [0.0] * 16}, "a"),
        "/v1/latent/encode": ({"images": ["%%%"]}, "images[0]"),
    }
    for path, (body, param) in cases.items():
        response = http.post(path, json={"model": LATENT_MODEL, **body})
        assert response.status_code == 400 and error_of(response)["param"] == param, (path, response.text)
