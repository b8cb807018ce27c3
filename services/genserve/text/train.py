"""Training and honest evaluation of the character language models.

Training draws random windows of the training plays; evaluation scores every character of the
held-out plays once (LSTM: as streams with carried state; Transformer: sliding windows where each
scored character sees at least half a block of context). Loss is reported in nats and bits per
character.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genserve.text.models import CharGPT, CharLSTM, LanguageModel
from genserve.text.vocab import CharVocab


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 4000
    batch_size: int = 64
    seq_len: int = 128  # characters per training window (BPTT length for the LSTM)
    learning_rate: float = 2e-3
    min_learning_rate: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 1337
    bf16: bool = False  # bfloat16 autocast: ~2x faster on CPUs with AVX512-BF16


@dataclass(frozen=True)
class EvalResult:
    loss_nats_per_char: float
    characters: int

    @property
    def bits_per_char(self) -> float:
        return self.loss_nats_per_char / math.log(2)


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_learning_rate`."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return config.min_learning_rate + cosine * (config.learning_rate - config.min_learning_rate)


def model_logits(model: LanguageModel, x: torch.Tensor) -> torch.Tensor:
    if isinstance(model, CharLSTM):
        return model(x)[0]
    return model(x)


def random_batch(
    data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=generator)
    offsets = torch.arange(seq_len + 1)
    windows = data[starts[:, None] + offsets[None, :]]
    return windows[:, :-1], windows[:, 1:]


StepCallback = Callable[[int, float, float], None]  # (step, train loss, learning rate)


def train(
    model: LanguageModel,
    train_ids: torch.Tensor,
    config: TrainConfig,
    device: torch.device,
    on_step: StepCallback | None = None,
) -> float:
    """Train in place; returns the mean training loss of the last 100 steps."""
    if isinstance(model, CharGPT) and config.seq_len != model.config.block_size:
        # Position embeddings past seq_len would never be trained, yet decoding reaches them.
        raise ValueError(
            f"transformer training needs seq_len == block_size, got {config.seq_len} and {model.config.block_size}"
        )
    generator = torch.Generator().manual_seed(config.seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        betas=(0.9, 0.99),
    )
    model.train()
    recent: list[float] = []
    for step in range(config.steps):
        lr = learning_rate_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = random_batch(train_ids, config.batch_size, config.seq_len, generator)
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            logits = model_logits(model, x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        recent = [*recent[-99:], loss.item()]
        if on_step is not None:
            on_step(step, recent[-1], lr)
    model.eval()
    return sum(recent) / len(recent)


@torch.no_grad()
def evaluate(model: LanguageModel, ids: torch.Tensor, device: torch.device) -> EvalResult:
    """Mean next-character loss over all of `ids` (nats/char)."""
    model.eval()
    if isinstance(model, CharLSTM):
        total, count = _evaluate_lstm(model, ids, device)
    else:
        total, count = _evaluate_gpt(model, ids, device)
    return EvalResult(loss_nats_per_char=total / count, characters=count)


def _evaluate_lstm(
    model: CharLSTM, ids: torch.Tensor, device: torch.device, streams: int = 16, chunk: int = 512
) -> tuple[float, int]:
    # Cut the text into `streams` contiguous pieces, read them side by side carrying the state.
    length = (ids.numel() - 1) // streams
    inputs = ids[: streams * length].view(streams, length).to(device)
    targets = ids[1 : streams * length + 1].view(streams, length).to(device)
    state = None
    total = 0.0
    for start in range(0, length, chunk):
        x = inputs[:, start : start + chunk]
        logits, state = model(x, state)
        y = targets[:, start : start + chunk]
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
    return total, streams * length


def _evaluate_gpt(model: CharGPT, ids: torch.Tensor, device: torch.device, batch_size: int = 32) -> tuple[float, int]:
    block = model.config.block_size
    stride = block // 2
    # Window w covers ids[s : s + block + 1]; it scores its last `stride` targets (all of the
    # first window), so every target is scored exactly once with ≥ stride characters of context.
    starts = list(range(0, ids.numel() - block - 1, stride))
    total = 0.0
    count = 0
    for first in range(0, len(starts), batch_size):
        batch_starts = torch.tensor(starts[first : first + batch_size])
        windows = ids[batch_starts[:, None] + torch.arange(block + 1)[None, :]].to(device)
        logits = model(windows[:, :-1])
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1), reduction="none"
        ).view(len(batch_starts), block)
        for row, start in enumerate(batch_starts.tolist()):
            scored = losses[row] if start == 0 else losses[row, block - stride :]
            total += float(scored.sum())
            count += scored.numel()
    return total, count


def encode_corpus(vocab: CharVocab, text: str) -> torch.Tensor:
    return torch.tensor(vocab.encode(text), dtype=torch.long)
