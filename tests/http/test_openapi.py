"""The OpenAPI document at /openapi.json: valid OpenAPI (as openapi-spec-validator checks it),
listing every route the app serves, every reference resolving, and every request field described."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi.routing import APIRoute
from openapi_spec_validator import validate

from genserve.http.app import ROUTERS
from tests.http.test_app import app_client

IMAGE_BODIES = {
    "/v1/vision/dream": "DreamRequest",
    "/v1/vision/style-preview": "StyleRequest",
    "/v1/jobs": "SubmitRequest",
}


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def test_the_document_is_valid_and_lists_every_route() -> None:
    client, _ = app_client()
    document = client.get("/openapi.json").json()
    validate(document)
    documented = {(path, method.upper()) for path, operations in document["paths"].items() for method in operations}
    # The app's routes: its own, and those of every area's router (FastAPI keeps an included
    # router as one entry of app.routes, so they are read where app.py reads them).
    routes = [*client.app.routes, *(route for router in ROUTERS for route in router.routes)]  # type: ignore[attr-defined]
    served = {
        (route.path, method)
        for route in routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods
    }
    assert documented == served and len(served) >= 23, sorted(served ^ documented)
    schemas = document["components"]["schemas"]
    for reference in references(document):
        assert reference.removeprefix("#/components/schemas/") in schemas, reference


def test_image_bodies_are_documented_as_json_and_as_forms() -> None:
    document = app_client()[0].get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    for path, model in IMAGE_BODIES.items():
        content = document["paths"][path]["post"]["requestBody"]["content"]
        assert content["application/json"]["schema"]["$ref"].endswith(f"/{model}")
        assert content["multipart/form-data"]["schema"]["$ref"].endswith(f"/{model}Form")
    assert schemas["DreamRequestForm"]["properties"]["image"]["format"] == "binary"
    assert schemas["StyleRequestForm"]["properties"]["style"]["items"]["format"] == "binary"
    assert "styles" not in schemas["StyleRequestForm"]["properties"]
    assert schemas["DreamRequest"]["properties"]["image"]["contentEncoding"] == "base64"
    events = document["paths"]["/v1/vision/dream"]["post"]["responses"]["200"]["content"]
    assert {"image/png", "application/json", "text/event-stream"} <= set(events)
    assert "Last-Event-ID" in [item["name"] for item in document["paths"]["/v1/jobs/{id}/events"]["get"]["parameters"]]


def test_every_field_of_the_image_latent_and_job_routes_is_described() -> None:
    document = app_client()[0].get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    areas = ("/v1/vision", "/v1/latent", "/v1/jobs")
    families = [item for path, item in document["paths"].items() if path.startswith(areas)]
    named = {reference.rsplit("/", 1)[-1] for reference in references(families)}
    while True:  # and the schemas those refer to
        more = {reference.rsplit("/", 1)[-1] for name in named for reference in references(schemas[name])} - named
        if not more:
            break
        named |= more
    named -= {"HTTPValidationError", "ValidationError"}  # FastAPI's own 422, which this API answers as 400
    assert len(named) >= 25, sorted(named)
    for name in sorted(named):
        for field, spec in schemas[name]["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"
