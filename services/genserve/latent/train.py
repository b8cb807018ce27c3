"""Training loops of the latent models: classifier (cross-entropy), VAE (-ELBO), DCGAN (non-saturating).

Every loop is seeded (initialisation, batch order, noise), takes images as uint8 (N, 28, 28) and
reports each step through a callback `(step, total_steps, {name: value})`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genserve.latent.models import (
    VAE,
    Classifier,
    Discriminator,
    Generator,
    negative_elbo,
)

GENERATOR_AVERAGE_DECAY = 0.999

StepCallback = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    min_learning_rate_ratio: float = 0.05
    seed: int = 1337
    discriminator_learning_rate: float | None = None  # GAN only; None = learning_rate
    decay_from: float = 1.0  # GAN only: share of the steps after which both rates fall linearly to 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay_from <= 1.0:
            raise ValueError(f"decay_from is a share of the training steps, 0 to 1; got {self.decay_from}")


def to_tensor(images: np.ndarray) -> Tensor:
    """uint8 (N, 28, 28) → float (N, 1, 28, 28) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).unsqueeze(1)


def batches(count: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Shuffled index batches covering `count` items once (the last short batch is dropped)."""
    order = torch.randperm(count, generator=generator)
    for start in range(0, count - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def steps_of(count: int, config: TrainConfig) -> int:
    return config.epochs * (count // config.batch_size)


def learning_rate_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_learning_rate_ratio × the peak."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
    low = config.learning_rate * config.min_learning_rate_ratio
    return low + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.learning_rate - low)


def gan_rate_scale(step: int, total: int, decay_from: float) -> float:
    """1 until `decay_from` × total steps, then linearly down towards 0 at the end (1 throughout when
    decay_from is 1): the SN-GAN schedule, which settles the game instead of stopping it mid-swing."""
    start = decay_from * total
    if step < start:
        return 1.0
    return max(0.0, (total - step) / max(1.0, total - start))


def _set_lr(optimizer: torch.optim.Optimizer, rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rate


def train_classifier(
    model: Classifier,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    on_step: StepCallback | None = None,
) -> float:
    """Cross-entropy (no label smoothing: confident outputs keep inception scores meaningful) with AdamW;
    random ±2-pixel shifts. Returns the mean loss of the last 100 steps."""
    generator = torch.Generator().manual_seed(config.seed)
    x_all, y_all = to_tensor(images), torch.from_numpy(labels)

    def batch_loss(index: Tensor) -> tuple[Tensor, dict[str, float]]:
        return F.cross_entropy(model(random_shift(x_all[index], 2, generator)), y_all[index]), {}

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    return _descend(model, optimizer, len(x_all), batch_loss, generator, config, on_step)


def random_shift(x: Tensor, pixels: int, generator: torch.Generator) -> Tensor:
    """Shift each image by up to ±`pixels` in x and y (zero fill)."""
    if pixels <= 0:
        return x
    size = x.shape[-1]
    padded = F.pad(x, (pixels, pixels, pixels, pixels))
    offsets = torch.randint(0, 2 * pixels + 1, (x.shape[0], 2), generator=generator)
    rows = offsets[:, 0, None] + torch.arange(size)[None, :]  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(size)[None, :]  # (B, W)
    batch = torch.arange(x.shape[0])[:, None, None]
    return padded[:, 0][batch, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def train_vae(model: VAE, images: np.ndarray, config: TrainConfig, on_step: StepCallback | None = None) -> float:
    """Minimise the mean -ELBO (Adam). Returns the mean training -ELBO (nats/image) of the last 100 steps."""
    generator = torch.Generator().manual_seed(config.seed)
    x_all = to_tensor(images)

    def batch_loss(index: Tensor) -> tuple[Tensor, dict[str, float]]:
        recon, kl = negative_elbo(model, x_all[index], generator)
        return (recon + kl).mean(), {"kl": kl.mean().item()}

    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    return _descend(model, optimizer, len(x_all), batch_loss, generator, config, on_step)


def _descend(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    count: int,
    batch_loss: Callable[[Tensor], tuple[Tensor, dict[str, float]]],
    generator: torch.Generator,
    config: TrainConfig,
    on_step: StepCallback | None,
) -> float:
    """The classifier's and the VAE's loop: shuffled batches of `count` items for the configured epochs,
    warm-up then cosine learning rates; `batch_loss(indices)` gives the loss and values to report.
    Returns the mean loss of the last 100 steps, with the model left in eval mode."""
    total = steps_of(count, config)
    model.train()
    recent: list[float] = []
    step = 0
    for _ in range(config.epochs):
        for index in batches(count, config.batch_size, generator):
            _set_lr(optimizer, rate := learning_rate_at(step, total, config))
            loss, reported = batch_loss(index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            recent = [*recent[-99:], loss.item()]
            step += 1
            if on_step is not None:
                on_step(step, total, {"loss": recent[-1], **reported, "lr": rate})
    model.eval()
    return sum(recent) / len(recent)


def train_gan(
    generator_model: Generator,
    discriminator: Discriminator,
    images: np.ndarray,
    config: TrainConfig,
    on_step: StepCallback | None = None,
) -> dict[str, float]:
    """DCGAN training with the hinge loss (Lim & Ye 2017; Miyato et al. 2018): the spectrally normalised
    discriminator minimises E[relu(1 - D(x))] + E[relu(1 + D(G(z)))], the generator -E[D(G(z))].
    Adam with β = (0, 0.9), the discriminator's learning rate optionally higher (the two time-scale
    rule). No warm-up or cosine decay here, unlike the other loops: the rates stay constant, or from
    `config.decay_from` of the steps on fall linearly to 0 (`gan_rate_scale`). The generator kept is
    the exponential moving average of its weights over the steps (decay GENERATOR_AVERAGE_DECAY),
    which smooths out the oscillation of the adversarial game.

    Afterwards the generator's BatchNorm statistics are recomputed over many noise batches, so
    that eval-mode decoding (deterministic, batch-independent) matches what training saw.
    """
    rng = torch.Generator().manual_seed(config.seed)
    x_all = to_tensor(images)
    total = steps_of(len(x_all), config)
    d_rate = config.discriminator_learning_rate or config.learning_rate
    g_opt = torch.optim.Adam(generator_model.parameters(), lr=config.learning_rate, betas=(0.0, 0.9))
    g_params = list(generator_model.parameters())
    g_average = [p.detach().clone() for p in g_params]
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=d_rate, betas=(0.0, 0.9))
    generator_model.train()
    discriminator.train()
    recent_d: list[float] = []
    recent_g: list[float] = []
    step = 0
    for _ in range(config.epochs):
        for index in batches(len(x_all), config.batch_size, rng):
            scale = gan_rate_scale(step, total, config.decay_from)
            _set_lr(g_opt, config.learning_rate * scale)
            _set_lr(d_opt, d_rate * scale)
            real = x_all[index]
            z = torch.randn(len(index), generator_model.latent_dim, generator=rng)
            fake = generator_model(z)
            d_loss = F.relu(1.0 - discriminator(real)).mean() + F.relu(1.0 + discriminator(fake.detach())).mean()
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            g_loss = -discriminator(fake).mean()
            g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            g_opt.step()
            with torch.no_grad():  # exponential moving average of the generator's weights
                decay = min(GENERATOR_AVERAGE_DECAY, (1 + step) / (10 + step))
                for average, param in zip(g_average, g_params, strict=True):
                    average.lerp_(param, 1.0 - decay)
            recent_d = [*recent_d[-99:], d_loss.item()]
            recent_g = [*recent_g[-99:], g_loss.item()]
            step += 1
            if on_step is not None:
                rate = g_opt.param_groups[0]["lr"]
                on_step(step, total, {"d_loss": recent_d[-1], "g_loss": recent_g[-1], "lr": rate})
    with torch.no_grad():
        for average, param in zip(g_average, g_params, strict=True):
            param.copy_(average)
    recalibrate_batch_norm(generator_model, batches=100, batch_size=config.batch_size, seed=config.seed + 1)
    discriminator.eval()
    return {"d_loss": sum(recent_d) / len(recent_d), "g_loss": sum(recent_g) / len(recent_g)}


@torch.no_grad()
def recalibrate_batch_norm(model: Generator, batches: int, batch_size: int, seed: int) -> None:
    """Replace the running BatchNorm statistics by their exact average over `batches` noise batches."""
    rng = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    for _ in range(batches):
        model(torch.randn(batch_size, model.latent_dim, generator=rng))
    for norm in norms:
        norm.momentum = 0.1
    model.eval()
