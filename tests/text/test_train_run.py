"""`train_text_model` on a tiny corpus: the run trains, scores the held-out text, registers a
checkpoint whose file matches its manifest entry, and tells its observer about every step."""

from __future__ import annotations

import math
from pathlib import Path

from genserve.common.model_store import ModelStore
from genserve.text.train_run import TextTrainingParams, TextTrainingPlan, train_text_model


class _Recorder:
    def __init__(self) -> None:
        self.plans: list[TextTrainingPlan] = []
        self.steps: list[int] = []
        self.finishes = 0

    def started(self, plan: TextTrainingPlan) -> None:
        self.plans.append(plan)

    def step(self, step: int, loss: float, rate: float) -> None:
        assert math.isfinite(loss) and rate > 0.0
        self.steps.append(step)

    def finished(self) -> None:
        self.finishes += 1


def test_a_text_run_registers_a_scored_checkpoint_that_loads(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 40, encoding="utf-8")
    params = TextTrainingParams(
        corpus=str(corpus), name="tiny", steps=3, batch_size=4, seq_len=16, embed_dim=8, hidden_size=16,
        num_layers=1, bf16="off", device="cpu", threads=1,
    )  # fmt: skip
    recorder = _Recorder()
    outcome = train_text_model(params, tmp_path / "store", tmp_path / "cache", "genserve train text", recorder)

    assert recorder.steps == [0, 1, 2] and recorder.finishes == 1
    (plan,) = recorder.plans
    assert (plan.architecture, plan.bf16, plan.validation_texts) == ("lstm", False, ("corpus.txt (last 10%)",))
    entry = ModelStore(tmp_path / "store").entries()["tiny"]
    assert entry == outcome.entry
    assert (entry.family, entry.architecture, entry.file) == ("text", "lstm", "text/tiny.safetensors")
    assert entry.command == "genserve train text"
    assert entry.details == {"vocab_size": plan.vocab_size, "steps": 3, "batch_size": 4, "seq_len": 16}
    assert entry.metrics["val_loss_nats_per_char"] == round(outcome.validation.loss_nats_per_char, 4)
    assert entry.metrics["val_characters"] == outcome.validation.characters > 0
    assert ModelStore(tmp_path / "store").verified_path(entry) == outcome.path
