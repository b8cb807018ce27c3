"""The OpenAI-compatible text API against a real stack (text service, gateway with API keys, http
role), called with the official `openai` package and with plain HTTP for the SSE wire format.

The gRPC API (`genserve.client.Client`) is the reference: the same seed and parameters must give
the same text over HTTP, unary or streamed.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from genserve.cli import app
from genserve.client import Client
from genserve.common.processes import free_port
from genserve.testing import ServerProcess
from tests.conftest import TEST_TEXT_ENV, behind_gateway, start_role, wait_for

API_KEY = "http-test-key"
# A batch of 16 lets a request for more completions be refused at once (RESOURCE_EXHAUSTED → 429);
# long completions keep the decoding busy while a client walks away.
TEXT_ENV = {**TEST_TEXT_ENV, "GENSERVE_TEXT_MAX_BATCH": "16", "GENSERVE_TEXT_MAX_TOKENS": "50000"}
LONG = 50000
TEXT_SERVICE = "genserve.v1.TextService"


@dataclass
class HttpStack:
    text: ServerProcess
    gateway: ServerProcess
    http: ServerProcess

    def openai(self, api_key: str = API_KEY) -> openai.OpenAI:
        # No retries: a test sees each answer as it was (the package retries 429 and 5xx by default).
        return openai.OpenAI(base_url=f"{self.http.url}/v1", api_key=api_key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpStack]:
    log_dir = tmp_path_factory.mktemp("http-logs")
    keys = {"GENSERVE_API_KEYS": f"tester:{API_KEY}"}
    with behind_gateway("text", log_dir, TEXT_ENV, keys) as (text, gateway):
        http = start_role("http", log_dir, {"GENSERVE_HTTP_GATEWAY_ADDR": gateway.address})
        try:
            yield HttpStack(text, gateway, http)
        finally:
            http.stop()


@pytest.fixture(scope="module")
def api(stack: HttpStack) -> Iterator[openai.OpenAI]:
    with stack.openai() as client:
        yield client


@pytest.fixture(scope="module")
def grpc_api(stack: HttpStack) -> Iterator[Client]:
    with Client(stack.gateway.address, api_key=API_KEY, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def model(api: openai.OpenAI) -> str:
    """The default text model, as /v1/models lists it."""
    listed = api.models.list().data
    text = [item for item in listed if item.model_extra and item.model_extra["genserve_family"] == "text"]
    return next(item.id for item in text if item.model_extra and item.model_extra["genserve_default"])


def gauge(process: ServerProcess, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`, from the process's /metrics."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(process.metrics())
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


def decoding(stack: HttpStack) -> float:
    """Text calls in flight plus sequences in the decode batch: 0 once all decoding has stopped."""
    calls = gauge(stack.text, "genserve_requests_in_flight", service=TEXT_SERVICE)
    return calls + gauge(stack.text, "genserve_text_active_sequences")


def test_health_and_models(stack: HttpStack, api: openai.OpenAI, model: str) -> None:
    health = httpx.get(f"{stack.http.url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "SERVING"
    # The container health check: `genserve health URL`.
    assert CliRunner().invoke(app, ["health", f"{stack.http.url}/healthz"]).exit_code == 0
    assert CliRunner().invoke(app, ["health", f"http://127.0.0.1:{free_port()}/healthz"]).exit_code == 1
    found = api.models.retrieve(model)
    assert found.id == model and found.object == "model" and (found.model_extra or {})["genserve_family"] == "text"
    with pytest.raises(openai.NotFoundError) as missing:
        api.models.retrieve("no-such-model")
    assert isinstance(missing.value.body, dict) and missing.value.body["code"] == "model_not_found"


def test_a_completion_is_the_grpc_api_text_for_the_same_seed(api: openai.OpenAI, grpc_api: Client, model: str) -> None:
    sampling = {"max_tokens": 60, "temperature": 0.8, "top_p": 0.95, "seed": 11}
    extras = {"top_k": 40, "repetition_penalty": 1.1}
    reply = api.completions.create(model=model, prompt="ROMEO:", extra_body=extras, **sampling)  # type: ignore[call-overload]
    reference = grpc_api.generate("ROMEO:", model=model, **sampling, **extras)  # type: ignore[misc]
    assert reply.choices[0].text == reference.text and len(reference.text) == 60
    assert reply.id.startswith("cmpl-") and reply.object == "text_completion" and reply.model == model
    assert reply.choices[0].finish_reason == "length" and reply.choices[0].index == 0
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (6, 60, 66)
    again = api.completions.create(model=model, prompt="ROMEO:", extra_body=extras, **sampling)  # type: ignore[call-overload]
    assert again.choices[0].text == reference.text


def test_a_streamed_completion_is_the_same_text_in_openai_chunks(api: openai.OpenAI, model: str) -> None:
    sampling = {"max_tokens": 80, "temperature": 0.9, "seed": 5}
    whole = api.completions.create(model=model, prompt="JULIET:", **sampling).choices[0].text  # type: ignore[call-overload]
    chunks = list(
        api.completions.create(
            model=model, prompt="JULIET:", stream=True, stream_options={"include_usage": True}, **sampling
        )  # type: ignore[call-overload]
    )
    pieces = [chunk for chunk in chunks if chunk.choices]
    assert len(pieces) > 1 and "".join(chunk.choices[0].text for chunk in pieces) == whole
    assert [chunk.choices[0].finish_reason for chunk in pieces][-1] == "length"
    assert all(chunk.choices[0].finish_reason is None for chunk in pieces[:-1])
    assert len({chunk.id for chunk in chunks}) == 1 and all(chunk.object == "text_completion" for chunk in chunks)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (7, 80)


def test_n_and_a_list_of_prompts_are_numbered_as_openai_does(api: openai.OpenAI, grpc_api: Client, model: str) -> None:
    reply = api.completions.create(model=model, prompt=["ROMEO:", "JULIET:"], n=2, max_tokens=20, seed=3)
    assert [choice.index for choice in reply.choices] == [0, 1, 2, 3]
    juliet = grpc_api.generate("JULIET:", model=model, n=2, max_tokens=20, seed=3)
    assert [choice.text for choice in reply.choices[2:]] == [done.text for done in juliet.completions]
    assert reply.choices[0].text != reply.choices[1].text, "n samples differ"
    assert reply.usage is not None and reply.usage.prompt_tokens == 6 + 7 and reply.usage.completion_tokens == 80
    streamed: dict[int, str] = {}
    for chunk in api.completions.create(
        model=model, prompt=["ROMEO:", "JULIET:"], n=2, max_tokens=20, seed=3, stream=True
    ):
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
    assert streamed == {choice.index: choice.text for choice in reply.choices}


def test_stop_ends_a_completion_before_the_stop_text(api: openai.OpenAI, model: str) -> None:
    reply = api.completions.create(model=model, prompt="KING:", stop=["e", "?"], n=3, max_tokens=300, seed=9)
    for choice in reply.choices:
        assert choice.finish_reason == "stop" and "e" not in choice.text and "?" not in choice.text
    single = api.completions.create(model=model, prompt="KING:", stop="e", max_tokens=300, seed=9)
    assert single.choices[0].text == reply.choices[0].text and single.choices[0].finish_reason == "stop"


def test_logprobs_come_in_the_legacy_format(api: openai.OpenAI, model: str) -> None:
    reply = api.completions.create(model=model, prompt="HAMLET:", max_tokens=30, logprobs=3, seed=2)
    choice = reply.choices[0]
    detail = choice.logprobs
    assert detail is not None and detail.tokens is not None and detail.token_logprobs is not None
    assert "".join(detail.tokens) == choice.text and len(detail.token_logprobs) == 30
    assert detail.text_offset == list(range(len("HAMLET:"), len("HAMLET:") + 30))
    assert detail.top_logprobs is not None and all(len(alternatives) == 3 for alternatives in detail.top_logprobs)
    assert all(value <= 0 for value in detail.token_logprobs)
    for token, value, alternatives in zip(detail.tokens, detail.token_logprobs, detail.top_logprobs, strict=True):
        if token in alternatives:
            assert alternatives[token] == pytest.approx(value)
    streamed = [
        chunk.choices[0].logprobs
        for chunk in api.completions.create(
            model=model, prompt="HAMLET:", max_tokens=30, logprobs=3, seed=2, stream=True
        )
    ]
    tokens = [token for part in streamed if part is not None and part.tokens for token in part.tokens]
    offsets = [offset for part in streamed if part is not None and part.text_offset for offset in part.text_offset]
    assert tokens == detail.tokens and offsets == detail.text_offset


def test_a_temperature_sweep_is_an_extra_field(api: openai.OpenAI, grpc_api: Client, model: str) -> None:
    reply = api.completions.create(
        model=model, prompt="ROMEO:", max_tokens=25, seed=4, extra_body={"temperatures": [0.0, 1.2]}
    )
    temperatures = [(choice.model_extra or {}).get("temperature") for choice in reply.choices]
    assert temperatures == [0.0, pytest.approx(1.2)]
    assert reply.choices[0].text == grpc_api.generate("ROMEO:", model=model, max_tokens=25, temperature=0).text


def test_errors_raise_the_openai_exceptions(stack: HttpStack, api: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        api.completions.create(model=model, prompt="ROMEO:", temperature=9)
    assert isinstance(bad.value.body, dict) and bad.value.body["param"] == "temperature"
    assert "[0, 5]" in bad.value.message
    with pytest.raises(openai.BadRequestError) as outside:
        api.completions.create(model=model, prompt=["ROMEO:", "€"], stream=True)
    assert isinstance(outside.value.body, dict) and outside.value.body["param"] == "prompt[1]"
    with stack.openai("wrong-key") as stranger, pytest.raises(openai.AuthenticationError) as refused:
        stranger.completions.create(model=model, prompt="ROMEO:")
    assert "invalid API key" in refused.value.message
    with pytest.raises(openai.NotFoundError) as unknown:
        api.completions.create(model="gpt-4", prompt="ROMEO:")
    assert isinstance(unknown.value.body, dict) and unknown.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError) as chat:
        api.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}])
    assert "character-level" in chat.value.message
    with pytest.raises(openai.RateLimitError) as busy:
        api.completions.create(model=model, prompt="ROMEO:", n=20, max_tokens=5)
    assert busy.value.response.headers["retry-after"] == "1" and "16" in busy.value.message
    with pytest.raises(openai.InternalServerError) as late:  # the package's class for any 5xx
        api.completions.create(
            model=model, prompt="ROMEO:", max_tokens=LONG, extra_headers={"X-Genserve-Timeout": "0.3"}
        )
    assert late.value.status_code == 504 and isinstance(late.value.body, dict)
    assert late.value.body["type"] == "timeout_error"


def test_plain_sse_is_data_lines_through_done(stack: HttpStack, model: str) -> None:
    body = {"model": model, "prompt": "ROMEO:", "max_tokens": 40, "seed": 1, "stream": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.stream("POST", f"{stack.http.url}/v1/completions", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())
    events = [line for line in lines if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in events[:-1]]
    assert all(chunk["object"] == "text_completion" and chunk["model"] == model for chunk in chunks)
    assert len("".join(chunk["choices"][0]["text"] for chunk in chunks)) == 40
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_a_client_that_leaves_a_stream_stops_the_decoding(stack: HttpStack, model: str) -> None:
    body = {"model": model, "prompt": "ROMEO:", "max_tokens": LONG, "n": 4, "stream": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.stream("POST", f"{stack.http.url}/v1/completions", json=body, headers=headers, timeout=30) as response:
        # The iterator is kept: leaving a loop over it would close it, and the connection with it.
        lines = response.iter_lines()
        received = 0
        while received < 5:
            received += next(lines).startswith("data: ")
        assert decoding(stack) >= 4, "the four completions are being decoded"
    left = time.monotonic()
    assert wait_for(lambda: decoding(stack) == 0, 3.0), "decoding went on after the client left"
    assert time.monotonic() - left < 3.0


def test_a_client_that_leaves_a_unary_request_stops_the_decoding(stack: HttpStack, model: str) -> None:
    body = json.dumps({"model": model, "prompt": "ROMEO:", "max_tokens": LONG, "n": 2}).encode()
    request = (
        f"POST /v1/completions HTTP/1.1\r\nHost: {stack.http.address}\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    host, port = stack.http.address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        assert wait_for(lambda: decoding(stack) >= 2, 10.0), "the request reached the decoder"
    assert wait_for(lambda: decoding(stack) == 0, 3.0), "decoding went on after the client left"


def test_http_metrics_count_requests_by_route_and_status(stack: HttpStack) -> None:
    http = stack.http

    def count(status: str) -> float:
        return gauge(http, "genserve_http_requests_total", route="/v1/completions", method="POST", status=status)

    assert count("200") >= 5 and count("400") >= 2 and count("404") >= 1 and count("429") >= 1
    assert count("504") >= 1
    assert wait_for(lambda: count("499") >= 2, 3.0), "both departed clients are counted as 499"
    assert gauge(http, "genserve_http_requests_total", route="/v1/chat/completions", status="404") >= 1
    assert wait_for(lambda: gauge(http, "genserve_http_in_flight") == 0, 3.0)
    assert gauge(http, "genserve_http_request_seconds_count", route="/v1/completions") >= 10


def test_the_http_role_never_loads_torch(stack: HttpStack) -> None:
    maps = Path(f"/proc/{stack.http.process.pid}/maps").read_text()
    assert "libtorch" not in maps and "python" in maps
