"""The latent training runs called directly (no CLI): a classifier run registers its entry and
reports every step; a generative run without its scoring classifier fails with `ScorerMissing`."""

from __future__ import annotations

from pathlib import Path

import pytest

from genserve.common.model_store import ModelStore
from genserve.latent.train_run import (
    ClassifierTrainingParams,
    GANTrainingParams,
    LatentTrainingPlan,
    ScorerMissing,
    train_classifier_model,
    train_gan_model,
)


class _Recorder:
    def __init__(self) -> None:
        self.plans: list[LatentTrainingPlan] = []
        self.steps: list[tuple[int, int]] = []
        self.finishes = 0

    def started(self, plan: LatentTrainingPlan) -> None:
        self.plans.append(plan)

    def step(self, step: int, total: int, values: dict[str, float]) -> None:
        assert "loss" in values
        self.steps.append((step, total))

    def finished(self) -> None:
        self.finishes += 1


def test_a_classifier_run_registers_its_scored_entry(store: Path) -> None:
    params = ClassifierTrainingParams(dataset="mnist", epochs=1, batch_size=64, lr=3e-3, channels=4, threads=1)
    recorder = _Recorder()
    outcome = train_classifier_model(params, store, Path("unused"), "genserve train classifier", recorder)

    (plan,) = recorder.plans
    assert (plan.model_name, plan.architecture, plan.train_images, plan.test_images) == (
        "mnist-classifier",
        "cnn-classifier",
        256,
        128,
    )
    assert recorder.steps == [(1, 4), (2, 4), (3, 4), (4, 4)] and recorder.finishes == 1
    entry = ModelStore(store).entries()["mnist-classifier"]
    assert entry == outcome.entry
    assert (entry.family, entry.command) == ("latent-classifier", "genserve train classifier")
    assert 0.0 <= entry.metrics["test_accuracy"] <= 1.0
    assert "rates_decay_from" not in entry.details and entry.details["learning_rate"] == 3e-3
    assert ModelStore(store).verified_path(entry) == outcome.path


def test_a_gan_run_without_its_scoring_classifier_fails_naming_the_command(store: Path) -> None:
    params = GANTrainingParams(dataset="mnist", epochs=1, batch_size=64, lr=2e-4, channels=4, latent_dim=3, threads=1)
    with pytest.raises(ScorerMissing, match="genserve train classifier --dataset mnist"):
        train_gan_model(params, store, Path("unused"), "genserve train gan")


def test_hyper_parameters_name_a_known_data_set() -> None:
    with pytest.raises(ValueError, match="mnist, fashion-mnist"):
        ClassifierTrainingParams(dataset="cifar", epochs=1, batch_size=64, lr=1e-3, channels=4)
