"""TextService through the gateway, over real sockets, against the committed default model."""

from __future__ import annotations

import re
import threading
import time

import grpc
import numpy as np
import pytest
import torch
from scipy import stats

from genserve.text.checkpoint import LoadedModel
from genserve.v1 import text_pb2, text_pb2_grpc
from tests.conftest import TextStack, wait_for

PROMPT = "ROMEO:\nI"


@pytest.fixture(scope="module")
def stub(gateway_channel: grpc.Channel) -> text_pb2_grpc.TextServiceStub:
    return text_pb2_grpc.TextServiceStub(gateway_channel)


def generate(stub: text_pb2_grpc.TextServiceStub, **fields: object) -> text_pb2.GenerateResponse:
    sampling = fields.pop("sampling", None)
    request = text_pb2.GenerateRequest(prompt=str(fields.pop("prompt", PROMPT)), **fields)  # type: ignore[arg-type]
    if sampling is not None:
        request.sampling.CopyFrom(sampling)  # type: ignore[arg-type]
    return stub.Generate(request, timeout=60)


def greedy_reference(model: LoadedModel, prompt: str, tokens: int) -> str:
    """Argmax decoding by full forward passes over the whole text, independent of the engine."""
    ids = model.vocab.encode(prompt)
    out = []
    with torch.no_grad():
        for _ in range(tokens):
            result = model.model(torch.tensor([ids]))
            logits = result[0] if isinstance(result, tuple) else result
            token = int(logits[0, -1].argmax())
            ids.append(token)
            out.append(token)
    return model.vocab.decode(out)


def test_same_seed_same_text(stub: text_pb2_grpc.TextServiceStub) -> None:
    first = generate(stub, max_tokens=80, seed=42)
    second = generate(stub, max_tokens=80, seed=42)
    other = generate(stub, max_tokens=80, seed=43)
    assert first.completions[0].text == second.completions[0].text
    assert first.completions[0].text != other.completions[0].text
    assert first.seed == 42


def test_temperature_zero_is_argmax(
    stub: text_pb2_grpc.TextServiceStub, default_text_model: tuple[str, LoadedModel]
) -> None:
    name, model = default_text_model
    response = generate(stub, max_tokens=60, sampling=text_pb2.SamplingParams(temperature=0.0))
    assert response.model == name
    assert response.completions[0].text == greedy_reference(model, PROMPT, 60)


def test_top_k_one_equals_greedy(stub: text_pb2_grpc.TextServiceStub) -> None:
    greedy = generate(stub, max_tokens=60, sampling=text_pb2.SamplingParams(temperature=0.0))
    top1 = generate(stub, max_tokens=60, seed=9, sampling=text_pb2.SamplingParams(temperature=1.0, top_k=1))
    assert top1.completions[0].text == greedy.completions[0].text


def test_samples_at_temperature_one_follow_the_model_softmax(
    stub: text_pb2_grpc.TextServiceStub, default_text_model: tuple[str, LoadedModel]
) -> None:
    _, model = default_text_model
    with torch.no_grad():
        result = model.model(torch.tensor([model.vocab.encode(PROMPT)]))
        logits = result[0] if isinstance(result, tuple) else result
    probs = torch.softmax(logits[0, -1].double(), -1).numpy()
    counts = np.zeros(model.vocab.size)
    for seed in range(40):  # 40 requests × 64 completions = 2560 first tokens
        response = generate(stub, max_tokens=1, n=64, seed=seed)
        for completion in response.completions:
            counts[model.vocab.encode(completion.text)[0]] += 1
    total = counts.sum()
    # Pool the rare tokens so every bin expects at least 5 draws.
    frequent = probs * total >= 5
    observed = np.append(counts[frequent], counts[~frequent].sum())
    expected = np.append(probs[frequent] * total, probs[~frequent].sum() * total)
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_logprobs_are_the_model_log_softmax(
    stub: text_pb2_grpc.TextServiceStub, default_text_model: tuple[str, LoadedModel]
) -> None:
    _, model = default_text_model
    response = generate(stub, max_tokens=1, seed=3, logprobs=True, top_logprobs=3)
    token = response.completions[0].tokens[0]
    with torch.no_grad():
        result = model.model(torch.tensor([model.vocab.encode(PROMPT)]))
        logits = result[0] if isinstance(result, tuple) else result
    logprobs = torch.log_softmax(logits[0, -1], -1)
    assert token.logprob == pytest.approx(float(logprobs[token.id]), abs=1e-4)
    top = [model.vocab.chars[i] for i in logprobs.topk(3).indices.tolist()]
    assert [t.token for t in token.top_logprobs] == top


def test_temperature_sweep_and_n_in_one_request(stub: text_pb2_grpc.TextServiceStub) -> None:
    response = generate(stub, max_tokens=20, seed=1, n=2, temperatures=[0.0, 0.7, 1.2])
    assert [c.index for c in response.completions] == list(range(6))
    assert [c.temperature for c in response.completions] == pytest.approx([0.0, 0.0, 0.7, 0.7, 1.2, 1.2])
    # both greedy completions agree; the sampled ones have their own seeds
    assert response.completions[0].text == response.completions[1].text
    assert len({c.seed for c in response.completions}) == 6


def test_stop_sequence_is_not_returned_nor_streamed(stub: text_pb2_grpc.TextServiceStub) -> None:
    greedy = generate(stub, max_tokens=120, sampling=text_pb2.SamplingParams(temperature=0.0)).completions[0].text
    stop = greedy[40:44]
    request = text_pb2.GenerateRequest(
        prompt=PROMPT, max_tokens=120, stop=[stop], sampling=text_pb2.SamplingParams(temperature=0.0)
    )
    unary = stub.Generate(request, timeout=30).completions[0]
    streamed = list(stub.GenerateStream(request, timeout=30))
    assert unary.text == greedy[: greedy.find(stop)]
    assert unary.finish_reason == text_pb2.FINISH_REASON_STOP
    assert "".join(m.text for m in streamed) == unary.text
    assert streamed[-1].finish_reason == text_pb2.FINISH_REASON_STOP


def test_streaming_yields_tokens_as_they_are_sampled(stub: text_pb2_grpc.TextServiceStub) -> None:
    # Long enough to span many 16 ms flush intervals even on a fast machine (≥ 0.3 ms per token).
    request = text_pb2.GenerateRequest(prompt=PROMPT, max_tokens=1500, seed=5)
    started = time.perf_counter()
    arrivals, texts = [], []
    for message in stub.GenerateStream(request, timeout=60):
        arrivals.append(time.perf_counter() - started)
        texts.append(message.text)
    assert len(arrivals) >= 20, "the stream should arrive in many pieces"
    assert arrivals[0] < 0.5 * arrivals[-1], "the first token must arrive long before the last"
    unary = stub.Generate(request, timeout=60)
    assert "".join(texts) == unary.completions[0].text


def active_sequences(stack: TextStack) -> float:
    found = re.findall(r'^genserve_text_active_sequences\{model="[^"]+"\} (\S+)$', stack.text.metrics(), re.M)
    return sum(float(v) for v in found)


def tokens_generated(stack: TextStack) -> float:
    found = re.findall(r'^genserve_tokens_generated_total\{model="[^"]+"\} (\S+)$', stack.text.metrics(), re.M)
    return sum(float(v) for v in found)


def test_cancelling_a_stream_frees_its_batch_slot(stub: text_pb2_grpc.TextServiceStub, text_stack: TextStack) -> None:
    call = stub.GenerateStream(text_pb2.GenerateRequest(prompt=PROMPT, max_tokens=2048, n=4), timeout=120)
    for _, _message in zip(range(3), call, strict=False):
        pass
    assert active_sequences(text_stack) == 4
    call.cancel()
    assert wait_for(lambda: active_sequences(text_stack) == 0, timeout=2)
    before = tokens_generated(text_stack)
    # The decoding loop goes on for a later request; no token of the cancelled stream rides along.
    stub.Generate(text_pb2.GenerateRequest(prompt=PROMPT, max_tokens=8), timeout=60)
    assert wait_for(lambda: tokens_generated(text_stack) >= before + 8, timeout=5)
    assert tokens_generated(text_stack) == before + 8, "decoding must stop with the client"


def test_a_passed_deadline_stops_decoding(stub: text_pb2_grpc.TextServiceStub, text_stack: TextStack) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Generate(text_pb2.GenerateRequest(prompt=PROMPT, max_tokens=2048, n=2), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(lambda: active_sequences(text_stack) == 0, timeout=2)


def test_concurrent_requests_share_decoding_steps(stub: text_pb2_grpc.TextServiceStub, text_stack: TextStack) -> None:
    def batch_size_sum() -> tuple[float, float]:
        text = text_stack.text.metrics()
        total = sum(float(v) for v in re.findall(r"^genserve_text_batch_size_sum\{[^}]*\} (\S+)$", text, re.M))
        steps = sum(float(v) for v in re.findall(r"^genserve_text_batch_size_count\{[^}]*\} (\S+)$", text, re.M))
        return total, steps

    before = batch_size_sum()
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda s=s: results.append(generate(stub, max_tokens=100, seed=s).completions[0].text))
        for s in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = batch_size_sum()
    rows, steps = after[0] - before[0], after[1] - before[1]
    assert rows == 8 * (len(PROMPT) + 100)  # short prompts are read through the shared steps too
    assert steps < 400, f"{steps} steps for 8 concurrent requests of 100 tokens: they were not batched"
    assert len(results) == 8
