"""One training run of a latent model: data set in, scored and registered model store entry out.

`train_classifier_model`, `train_vae_model` and `train_gan_model` each take a frozen dataclass of
hyper-parameters, train with the loops of `latent.train`, evaluate on the test split (accuracy;
-ELBO and prior-sample scores judged by the data set's classifier from the store) and register the
weights in the model store. Progress goes to a `TrainingObserver`, so the caller decides how to
show it; the run itself prints nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from genserve.common.checkpoint import parameter_count
from genserve.common.devices import configure_torch
from genserve.common.model_store import ModelEntry, ModelStore, ModelStoreError
from genserve.common.packages import sha256_of
from genserve.latent import data
from genserve.latent import evaluate as ev
from genserve.latent import models as nets
from genserve.latent.train import StepCallback, TrainConfig, train_classifier, train_gan, train_vae

DATASETS = ("mnist", "fashion-mnist")
_PREFIX = {"mnist": "mnist", "fashion-mnist": "fashion"}  # default model names: PREFIX-vae-16d, ...


@dataclass(frozen=True, kw_only=True)
class LatentTrainingParams:
    """What every latent trainer needs; each model kind adds its own fields below."""

    dataset: str  # "mnist" or "fashion-mnist": picks the arrays, class names and default model names
    name: str = ""  # store name; "" = the kind's default for the data set (mnist-classifier, ...)
    version: str = "1"  # recorded in the manifest, not interpreted
    epochs: int  # passes over the training split
    batch_size: int
    lr: float  # peak learning rate (the generator's for a GAN)
    channels: int  # first convolution's width: the main size knob of every latent model
    seed: int = 1337  # initialisation, batch order and noise all follow it
    threads: int = 0  # torch threads; 0 = one per core

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}")


@dataclass(frozen=True, kw_only=True)
class ClassifierTrainingParams(LatentTrainingParams):
    """The CNN that scores a data set's generated images (and the VAE's and GAN's test metrics)."""


@dataclass(frozen=True, kw_only=True)
class VAETrainingParams(LatentTrainingParams):
    latent_dim: int  # size of the code the service encodes to and decodes from
    hidden: int  # fully connected width between the convolutions and the code
    binarized: bool  # Bernoulli likelihood of binarised pixels instead of intensities
    classifier: str = ""  # store classifier that scores samples; "" = DATASET-classifier


@dataclass(frozen=True, kw_only=True)
class GANTrainingParams(LatentTrainingParams):
    latent_dim: int  # noise dimensions fed to the generator
    d_lr: float = 0.0  # discriminator learning rate; 0 = the generator's
    decay_from: float = 1.0  # share of training after which both rates fall linearly to 0 (1 = never)
    classifier: str = ""  # store classifier that scores samples; "" = DATASET-classifier


class ScorerMissing(ModelStoreError):
    """A VAE or GAN was trained but the store has no classifier to score its samples with."""


@dataclass(frozen=True)
class LatentTrainingPlan:
    """What is about to be trained, for the caller to announce."""

    model_name: str
    architecture: str
    parameters: int
    dataset: str
    train_images: int
    test_images: int
    epochs: int
    batch_size: int
    threads: int  # torch threads actually in use


@dataclass(frozen=True)
class LatentTrainingOutcome:
    entry: ModelEntry  # as registered: metrics and details included
    path: Path  # the weights file written
    manifest_path: Path
    train_seconds: float  # unrounded (the entry keeps one decimal)


class TrainingObserver(Protocol):
    def started(self, plan: LatentTrainingPlan) -> None:
        """Called once the data is loaded and the model built, before the first step."""

    def step(self, step: int, total: int, values: dict[str, float]) -> None:
        """After every optimiser step: 1-based step, steps in all, the loop's current losses."""

    def finished(self) -> None:
        """Training is over; evaluation and saving follow."""


class SilentObserver:
    """Watches nothing: for runs whose progress nobody reads (tests, scripts)."""

    def started(self, plan: LatentTrainingPlan) -> None:
        pass

    def step(self, step: int, total: int, values: dict[str, float]) -> None:
        pass

    def finished(self) -> None:
        pass


def train_classifier_model(
    params: ClassifierTrainingParams,
    store: Path,
    cache_dir: Path,
    command: str,
    observer: TrainingObserver | None = None,
) -> LatentTrainingOutcome:
    """Train the data set's classifier, report its test accuracy, register it."""
    return _run(params, store, cache_dir, command, observer, lambda: _classifier_kind(params))


def train_vae_model(
    params: VAETrainingParams, store: Path, cache_dir: Path, command: str, observer: TrainingObserver | None = None
) -> LatentTrainingOutcome:
    """Train a convolutional VAE, report test -ELBO and prior-sample scores, register it."""
    return _run(params, store, cache_dir, command, observer, lambda: _vae_kind(params))


def train_gan_model(
    params: GANTrainingParams, store: Path, cache_dir: Path, command: str, observer: TrainingObserver | None = None
) -> LatentTrainingOutcome:
    """Train a DCGAN, report inception score, class shares and Fréchet distance, register the generator."""
    return _run(params, store, cache_dir, command, observer, lambda: _gan_kind(params))


TrainLoop = Callable[[np.ndarray, np.ndarray, TrainConfig, StepCallback], dict[str, float]]


@dataclass(frozen=True)
class _Kind:
    """One model kind's part of a run: its untrained model, its manifest labels and its loop."""

    model: nets.Classifier | nets.VAE | nets.Generator
    family: str
    architecture: str
    suffix: str  # default name: PREFIX-SUFFIX
    scorer_name: str  # the store classifier asked for ("" = the data set's); unused by a classifier
    train: TrainLoop  # (images, labels, config, on_step) -> final training losses by manifest key


def _classifier_kind(params: ClassifierTrainingParams) -> _Kind:
    model = nets.Classifier(nets.ClassifierConfig(channels=params.channels))

    def loop(images: np.ndarray, labels: np.ndarray, config: TrainConfig, on_step: StepCallback) -> dict[str, float]:
        return {"train_loss": train_classifier(model, images, labels, config, on_step)}

    return _Kind(model, "latent-classifier", "cnn-classifier", "classifier", "", loop)


def _vae_kind(params: VAETrainingParams) -> _Kind:
    config = nets.VAEConfig(
        latent_dim=params.latent_dim, channels=params.channels, hidden=params.hidden, binarized=params.binarized
    )
    model = nets.VAE(config)

    def loop(images: np.ndarray, labels: np.ndarray, config: TrainConfig, on_step: StepCallback) -> dict[str, float]:
        return {"train_neg_elbo_nats": train_vae(model, images, config, on_step)}

    return _Kind(model, "latent", "vae", f"vae-{model.latent_dim}d", params.classifier, loop)


def _gan_kind(params: GANTrainingParams) -> _Kind:
    generator = nets.Generator(nets.GeneratorConfig(latent_dim=params.latent_dim, channels=params.channels))
    discriminator = nets.Discriminator(nets.DiscriminatorConfig(channels=params.channels))

    def loop(images: np.ndarray, labels: np.ndarray, config: TrainConfig, on_step: StepCallback) -> dict[str, float]:
        losses = train_gan(generator, discriminator, images, config, on_step)
        return {f"train_{key}": value for key, value in losses.items()}

    return _Kind(generator, "latent", "dcgan", "dcgan", params.classifier, loop)


def _run(
    params: LatentTrainingParams,
    store: Path,
    cache_dir: Path,
    command: str,
    observer: TrainingObserver | None,
    build: Callable[[], _Kind],
) -> LatentTrainingOutcome:
    # The seed is set before the model is built, so the initialisation follows it too.
    configure_torch(params.threads)
    torch.manual_seed(params.seed)
    train_x, train_y = data.load_dataset(params.dataset, "train", cache_dir)
    test_x, test_y = data.load_dataset(params.dataset, "test", cache_dir)
    config = TrainConfig(
        epochs=params.epochs,
        batch_size=params.batch_size,
        learning_rate=params.lr,
        seed=params.seed,
        discriminator_learning_rate=(params.d_lr or None) if isinstance(params, GANTrainingParams) else None,
        decay_from=params.decay_from if isinstance(params, GANTrainingParams) else 1.0,
    )
    observer = observer or SilentObserver()
    kind = build()
    model = kind.model
    prefix = _PREFIX[params.dataset]
    model_name = params.name or f"{prefix}-{kind.suffix}"
    observer.started(
        LatentTrainingPlan(
            model_name=model_name,
            architecture=kind.architecture,
            parameters=parameter_count(model),
            dataset=params.dataset,
            train_images=len(train_x),
            test_images=len(test_x),
            epochs=config.epochs,
            batch_size=config.batch_size,
            threads=torch.get_num_threads(),
        )
    )
    started = time.monotonic()
    try:
        final = kind.train(train_x, train_y, config, observer.step)
    finally:
        observer.finished()
    train_seconds = time.monotonic() - started
    model.eval()
    model.requires_grad_(False)
    metrics: dict[str, float] = {key: round(value, 4) for key, value in final.items()}
    details = _details(params, config, model)
    if isinstance(model, nets.Classifier):
        metrics["test_accuracy"] = round(ev.accuracy(model, test_x, test_y), 4)
        details["features"] = model.config.features
    else:
        scorer_name = kind.scorer_name or f"{prefix}-classifier"
        scorer = _load_scorer(ModelStore(store), scorer_name, params.dataset)
        details["latent_dim"] = model.latent_dim
        details["scored_by"] = scorer_name
        if isinstance(model, nets.VAE):
            details["likelihood"] = "bernoulli-binarized" if model.config.binarized else "bernoulli-intensities"
            metrics.update({k: round(v, 3) for k, v in ev.vae_negative_elbo(model, test_x, seed=0).items()})
        quality = ev.sample_quality(model.decode, model.latent_dim, scorer, test_x, seed=0)
        metrics.update({k: round(v, 4) for k, v in quality.items()})
        reference = ev.reference_scores(scorer, train_x, test_x)
        metrics.update({f"real_images_{k}": round(v, 4) for k, v in reference.items()})
    metrics["train_seconds"] = round(train_seconds, 1)
    relative = Path("latent") / f"{model_name}.safetensors"
    path = store / relative
    header = {
        "name": model_name,
        "dataset": params.dataset,
        "class_names": json.dumps(data.CLASS_NAMES[params.dataset]),
    }
    nets.save_model(model, path, header)
    entry = ModelEntry(
        name=model_name,
        version=params.version,
        family=kind.family,
        architecture=kind.architecture,
        file=str(relative),
        sha256=sha256_of(path),
        parameter_count=parameter_count(model),
        data_source=(
            f"{data.DATA_SOURCES[params.dataset]}; train {len(train_x):,} images, metrics on the {len(test_x):,} test"
        ),
        command=command,
        metrics=metrics,
        details=details,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    store_root = ModelStore(store)
    store_root.register(entry)
    return LatentTrainingOutcome(entry, path, store_root.manifest_path, train_seconds)


def _details(
    params: LatentTrainingParams, config: TrainConfig, model: nets.Classifier | nets.VAE | nets.Generator
) -> dict[str, object]:
    """The manifest's `details`: what the model is and how it was trained (optional rates only when set)."""
    details: dict[str, object] = {
        "dataset": params.dataset,
        "class_names": data.CLASS_NAMES[params.dataset],
        "image_size": model.image_size,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "seed": params.seed,
    }
    if config.discriminator_learning_rate is not None:
        details["discriminator_learning_rate"] = config.discriminator_learning_rate
    if config.decay_from < 1.0:
        details["rates_decay_from"] = config.decay_from
    return details


def _load_scorer(store: ModelStore, name: str, dataset: str) -> nets.Classifier:
    entry = store.entries().get(name)
    if entry is None:
        raise ScorerMissing(
            f"no classifier {name!r} in {store.manifest_path} to score samples with: run "
            f"`genserve train classifier --dataset {dataset}` first"
        )
    scorer = nets.load_model(store.verified_path(entry))
    if not isinstance(scorer, nets.Classifier):
        raise ScorerMissing(f"{name!r} in {store.manifest_path} is a {type(scorer).__name__}, not a classifier")
    return scorer
