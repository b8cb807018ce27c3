"""The front door's own behaviour, in process (no gateway behind it): the error shape of what
FastAPI refuses, the body limit, CORS, route-template metrics and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from genserve.client import AsyncClient
from genserve.common.config import HttpSettings
from genserve.common.metrics import HttpMetrics
from genserve.http.app import create_app


class NoCalls:
    """Stands in for the gateway client: these requests are all refused before any call."""

    def with_api_key(self, api_key: str) -> NoCalls:
        return self

    async def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the gateway was called ({name})")


def app_client(**settings: object) -> tuple[TestClient, CollectorRegistry]:
    """A client of a fresh application; its lifespan (which makes the gateway client) runs only
    inside `with`."""
    registry = CollectorRegistry()
    app = create_app(HttpSettings(**settings), HttpMetrics(registry), lambda: cast(AsyncClient, NoCalls()))  # type: ignore[arg-type]
    return TestClient(app, raise_server_exceptions=False), registry


@pytest.fixture
def client() -> Iterator[TestClient]:
    with app_client(max_body_bytes=1000)[0] as started:
        yield started


def error_of(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


def test_validation_errors_are_400_naming_the_field(client: TestClient) -> None:
    cases = {
        '{"prompt": "x", "max_tokens": "many"}': "max_tokens",
        '{"prompt": "x", "stop": ["a", 3]}': "stop[1]",
        '{"prompt": ["a", 7]}': "prompt[1]",
        '{"prompt": "x", "top_kk": 3}': "top_kk",
        '{"max_tokens": 3}': "prompt",
    }
    for body, param in cases.items():
        response = client.post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, body
        error = error_of(response)
        assert error["param"] == param and error["type"] == "invalid_request_error", (body, error)
        assert param.split("[")[0] in str(error["message"])
    response = client.post("/v1/completions", content="{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_json"


def test_unsupported_openai_parameters_are_refused_by_name(client: TestClient) -> None:
    for extra, param in (({"echo": True}, "echo"), ({"suffix": "x"}, "suffix"), ({"best_of": 3}, "best_of")):
        response = client.post("/v1/completions", json={"prompt": "x", **extra})
        error = error_of(response)
        assert response.status_code == 400 and error["param"] == param and error["code"] == "unsupported_parameter"


def test_unknown_routes_methods_and_chat_have_the_error_shape(client: TestClient) -> None:
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and "/openapi.json" in str(error_of(missing)["message"])
    assert client.get("/v1/completions").status_code == 405
    chat = client.post("/v1/chat/completions", json={"model": "x", "messages": []})
    error = error_of(chat)
    assert chat.status_code == 404 and error["code"] == "chat_not_supported"
    assert "character-level" in str(error["message"]) and "/v1/completions" in str(error["message"])


def test_a_body_over_the_limit_is_413_declared_or_streamed(client: TestClient) -> None:
    declared = client.post("/v1/completions", content=b'{"prompt": "' + b"a" * 2000 + b'"}')
    assert declared.status_code == 413 and "GENSERVE_HTTP_MAX_BODY_BYTES" in str(error_of(declared)["message"])

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"prompt": "'
        for _ in range(30):
            yield b"a" * 100
        yield b'"}'

    streamed = client.post("/v1/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and error_of(streamed)["code"] == "body_too_large"


def test_a_bad_authorization_header_or_timeout_is_refused_before_any_call(client: TestClient) -> None:
    basic = client.get("/v1/models", headers={"Authorization": "Basic abc"})
    assert basic.status_code == 401 and error_of(basic)["param"] == "Authorization"
    zero = client.get("/v1/models", headers={"X-Genserve-Timeout": "0"})
    assert zero.status_code == 400 and error_of(zero)["param"] == "X-Genserve-Timeout"
    # Before the lifespan has made the gateway client, routes answer 503.
    starting = app_client()[0].get("/v1/models")
    assert starting.status_code == 503 and error_of(starting)["type"] == "service_unavailable_error"


def test_cors_is_off_by_default_and_answers_configured_origins() -> None:
    preflight = {"Origin": "https://play.example", "Access-Control-Request-Method": "POST"}
    off, _ = app_client()
    assert "access-control-allow-origin" not in off.options("/v1/completions", headers=preflight).headers
    on, _ = app_client(cors_origins="https://play.example, https://other.example")
    allowed = on.options(
        "/v1/completions", headers={**preflight, "Access-Control-Request-Headers": "authorization,content-type"}
    )
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://play.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = on.options("/v1/completions", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in refused.headers


def test_metrics_name_requests_by_route_template_and_status() -> None:
    client, registry = app_client()

    def count(route: str, method: str, status: str) -> float:
        labels = {"route": route, "method": method, "status": status}
        return registry.get_sample_value("genserve_http_requests_total", labels) or 0.0

    # Every route's 200 series exists before any traffic.
    assert (
        registry.get_sample_value(
            "genserve_http_requests_total", {"route": "/v1/models/{model}", "method": "GET", "status": "200"}
        )
        == 0.0
    )
    client.get("/v1/models/some-model")  # 503 here: no gateway client without the lifespan
    client.get("/v1/no/such/thing")
    client.post("/v1/completions", json={"prompt": "x"})
    assert count("/v1/models/{model}", "GET", "503") == 1
    assert count("unmatched", "GET", "404") == 1
    assert count("/v1/completions", "POST", "503") == 1
    in_flight = {"route": "/v1/completions", "method": "POST"}
    assert registry.get_sample_value("genserve_http_in_flight", in_flight) == 0
    assert registry.get_sample_value("genserve_http_request_seconds_count", in_flight) == 1


def test_the_openapi_document_lists_the_routes_and_the_request_schema(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/models/{model}", "/healthz"} <= set(
        document["paths"]
    )
    request = document["components"]["schemas"]["CompletionRequest"]["properties"]
    assert {"prompt", "max_tokens", "stream", "logprobs", "top_k", "min_p", "temperatures"} <= set(request)


def test_the_playground_page_and_its_files_are_served_from_the_package() -> None:
    client, registry = app_client()
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # Everything the page loads lies beside it, and each of those files is served.
    for asset in ("static/playground.css", "static/playground.js"):
        assert f'"{asset}"' in page.text
        served = client.get(f"/{asset}")
        assert served.status_code == 200 and served.content
    missing = client.get("/static/nothing.js")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    assert "http" not in page.text.replace("http-equiv", ""), "the page loads nothing from elsewhere"

    def count(route: str) -> float:
        labels = {"route": route, "method": "GET", "status": "200"}
        return registry.get_sample_value("genserve_http_requests_total", labels) or 0.0

    assert count("/") == 1 and count("/static") == 2
