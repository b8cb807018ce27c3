"""The continuous-batching engine on a tiny model, in-process (the service tests cover gRPC)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future

import pytest
import torch

from genserve.common.devices import configure_torch
from genserve.common.errors import ResourceExhausted
from genserve.text.decode_loop import DecodeLoop
from genserve.text.engine import DecodeEngine, Generation
from genserve.text.models import CharLSTM, LSTMConfig
from genserve.text.protocol import CompletionSpec, CompletionUpdate, Finish, GenerationSpec, SamplingConfig
from genserve.text.vocab import CharVocab
from tests.conftest import wait_for

VOCAB = CharVocab.from_text("abcdefghij \n")


class Collector:
    """Receives a generation's updates on the engine thread."""

    def __init__(self) -> None:
        self.updates: list[CompletionUpdate] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.expected = 0

    def __call__(self, item: list[CompletionUpdate] | BaseException) -> None:
        if isinstance(item, BaseException):
            self.error = item
            self.done.set()
            return
        self.updates.extend(item)
        if sum(1 for u in self.updates if u.finish) == self.expected:
            self.done.set()

    def text(self, index: int = 0) -> str:
        return "".join(u.text for u in self.updates if u.index == index)

    def finish(self, index: int = 0) -> Finish | None:
        return next((u.finish for u in self.updates if u.index == index and u.finish), None)


@pytest.fixture
def engine() -> Iterator[DecodeEngine]:
    """A tiny engine decoding on a thread of its own (in the service, the decode process's main thread)."""
    loop = DecodeLoop()
    loaded: Future[DecodeEngine] = Future()

    def main() -> None:
        configure_torch(0)  # the engine's torch work runs on this thread, loading included
        torch.manual_seed(0)
        model = CharLSTM(LSTMConfig(VOCAB.size, embed_dim=8, hidden_size=32, num_layers=1, dropout=0.0)).eval()
        engine = DecodeEngine("tiny", model, VOCAB, torch.device("cpu"), loop.wake, max_batch=8, max_waiting=8)
        loaded.set_result(engine)
        loop.run([engine])

    threading.Thread(target=main, name="decode", daemon=True).start()
    yield loaded.result(timeout=30)
    loop.stop()


def submit(
    engine: DecodeEngine,
    prompt: str = "abc",
    *,
    seeds: tuple[int, ...] = (1,),
    max_tokens: int = 30,
    temperature: float = 1.0,
    stop: tuple[str, ...] = (),
) -> tuple[Generation, Collector]:
    collector = Collector()
    specs = [CompletionSpec(i, SamplingConfig(temperature=temperature), seed) for i, seed in enumerate(seeds)]
    collector.expected = len(specs)
    generation = Generation(GenerationSpec(VOCAB.encode(prompt), tuple(specs), max_tokens, stop), collector)
    engine.submit(generation)
    return generation, collector


def finished(collector: Collector) -> Collector:
    assert collector.done.wait(10), "the engine did not finish the generation"
    assert collector.error is None
    return collector


def test_same_seed_same_text_and_different_seeds_differ(engine: DecodeEngine) -> None:
    a = finished(submit(engine, seeds=(11,))[1])
    b = finished(submit(engine, seeds=(11,))[1])
    c = finished(submit(engine, seeds=(12,))[1])
    assert a.text() == b.text()
    assert a.text() != c.text()
    assert len(a.text()) == 30 and a.finish() is Finish.LENGTH


def test_a_request_gives_the_same_text_alone_or_in_a_busy_batch(engine: DecodeEngine) -> None:
    alone = finished(submit(engine, seeds=(5,), max_tokens=40)[1]).text()
    # The crowd decodes far longer than the request below, so that one joins a batch already running
    # and leaves it while the crowd still decodes.
    crowd = [submit(engine, prompt="j\nj", seeds=(s, s + 1), max_tokens=1000) for s in range(3)]
    assert wait_for(lambda: engine.active_rows == 6, timeout=5)
    joined = finished(submit(engine, seeds=(5,), max_tokens=40)[1]).text()
    assert not any(collector.done.is_set() for _, collector in crowd), "the crowd was still in the batch"
    for _, collector in crowd:
        finished(collector)
    assert joined == alone


def test_rows_with_other_controls_join_and_leave_without_changing_anyones_text(engine: DecodeEngine) -> None:
    """The batch keeps one shared set of controls while every row has the same and one per row
    otherwise: a greedy request joining sampled rows (and leaving before them) changes nobody's draws."""
    sampled_alone = finished(submit(engine, seeds=(7,), max_tokens=3000)[1]).text()
    greedy_alone = finished(submit(engine, seeds=(3,), temperature=0.0, max_tokens=20)[1]).text()
    _, sampled = submit(engine, seeds=(7,), max_tokens=3000)
    assert wait_for(lambda: engine.active_rows == 1, timeout=5)
    greedy = finished(submit(engine, seeds=(3,), temperature=0.0, max_tokens=20)[1]).text()
    assert not sampled.done.is_set(), "the sampled request was still in the batch"
    assert finished(sampled).text() == sampled_alone
    assert greedy == greedy_alone


def test_cancel_frees_the_batch_slot_at_the_next_step(engine: DecodeEngine) -> None:
    generation, collector = submit(engine, max_tokens=100_000)
    assert wait_for(lambda: engine.active_rows == 1, timeout=5)
    generation.cancel()
    assert wait_for(lambda: engine.active_rows == 0, timeout=2)
    assert not collector.done.is_set()


def test_stop_sequence_ends_the_completion_before_it(engine: DecodeEngine) -> None:
    greedy = finished(submit(engine, temperature=0.0, max_tokens=40)[1]).text()
    stop = greedy[10:13]
    first = greedy.find(stop)
    collector = finished(submit(engine, temperature=0.0, max_tokens=40, stop=(stop,))[1])
    assert collector.text() == greedy[:first]
    assert collector.finish() is Finish.STOP


def test_waiting_queue_is_bounded(engine: DecodeEngine) -> None:
    blockers = [submit(engine, seeds=tuple(range(8)), max_tokens=100_000)[0]]  # fills the batch
    assert wait_for(lambda: engine.active_rows == 8, timeout=5)
    blockers.append(submit(engine, seeds=tuple(range(8)), max_tokens=10)[0])  # fills the waiting queue
    with pytest.raises(ResourceExhausted, match="limit 8"):
        submit(engine, seeds=(1,))
    for generation in blockers:
        generation.cancel()


def test_n_completions_are_independent_draws(engine: DecodeEngine) -> None:
    collector = finished(submit(engine, seeds=(1, 2, 3), max_tokens=30)[1])
    texts = {collector.text(i) for i in range(3)}
    assert len(texts) == 3


def test_a_flush_interval_groups_tokens_without_losing_any(engine: DecodeEngine) -> None:
    every_token = finished(submit(engine, seeds=(4,), max_tokens=300)[1])
    collector = Collector()
    collector.expected = 1
    deliveries: list[int] = []

    def deliver(item: list[CompletionUpdate] | BaseException) -> None:
        if not isinstance(item, BaseException):
            deliveries.append(sum(len(u.text) for u in item))
        collector(item)

    spec = CompletionSpec(0, SamplingConfig(), 4)
    engine.submit(Generation(GenerationSpec(VOCAB.encode("abc"), (spec,), 300, flush_interval=0.01), deliver))
    finished(collector)
    assert collector.text() == every_token.text()
    assert deliveries[0] == 1, "the first token goes out at once"
    assert 1 < len(deliveries) < 300, deliveries


def test_a_poke_runs_one_round_of_an_idle_loop() -> None:
    """A refusal at submit leaves no work: a poke still gets after_tick to send it."""
    loop = DecodeLoop()
    rounds: list[bool] = []
    ran = threading.Event()

    def after_tick(idle: bool) -> None:
        rounds.append(idle)
        ran.set()

    runner = threading.Thread(target=loop.run, args=([], after_tick), daemon=True)
    runner.start()
    assert not ran.wait(0.2), "an idle loop sleeps"
    loop.poke()
    assert ran.wait(5) and rounds == [True]
    loop.stop()
    runner.join(5)
    assert not runner.is_alive()
