"""The latent-space models: a convolutional VAE, a DCGAN and the small CNN classifier that scores them.

All images are (B, 1, 28, 28) floats in [0, 1]. Every model is saved as safetensors with its
kind and constructor config in the header (nothing pickled), and is loaded in eval mode with
gradients off, so encode/decode are deterministic functions of their input: no dropout, and
BatchNorm uses its stored statistics, so one image decodes the same alone or in a batch of 64.

VAE (Kingma & Welling 2014): q(z|x) = N(mean, diag(exp(log_variance))), prior N(0, I),
p(x|z) = Bernoulli(sigmoid(decoder logits)) per pixel. `negative_elbo` gives the two terms of
-ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z)) in nats per image, one z sample per image. A
`binarized` VAE models binary images: its pixels are drawn x_b ~ Bernoulli(x) from the [0, 1]
intensities (dynamic binarisation, the usual MNIST likelihood benchmark); otherwise the
Bernoulli cross-entropy is taken against the intensities themselves (which has a floor of the
pixels' own entropy, ~45 nats/image on MNIST).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genserve.common.checkpoint import load_weights, read_header, write_checkpoint
from genserve.common.model_store import ModelStoreError

FORMAT = "genserve.latent/1"
IMAGE_SIZE = 28


class LatentModelError(ModelStoreError):
    """A latent model file is missing or is not one of ours."""


# ---------------------------------------------------------------- VAE


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 16
    channels: int = 32  # first conv width; the second is twice this
    hidden: int = 256
    binarized: bool = False  # likelihood of Bernoulli-binarised pixels instead of intensities


class VAE(nn.Module):
    kind: ClassVar[str] = "vae"
    image_size: ClassVar[int] = IMAGE_SIZE

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.metadata: dict[str, str] = {}  # the file header, once loaded
        self.latent_dim = config.latent_dim
        c, h = config.channels, config.hidden
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1),  # 14x14
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 4, 2, 1),  # 7x7
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * c * 49, h),
            nn.ReLU(),
        )
        self.to_mean = nn.Linear(h, config.latent_dim)
        self.to_log_variance = nn.Linear(h, config.latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, h),
            nn.ReLU(),
            nn.Linear(h, 2 * c * 49),
            nn.ReLU(),
            nn.Unflatten(1, (2 * c, 7, 7)),
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1),  # 14x14
            nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 4, 2, 1),  # 28x28 logits
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B,1,28,28) in [0,1] → (mean, log_variance), each (B, latent_dim)."""
        hidden = self.encoder(x)
        return self.to_mean(hidden), self.to_log_variance(hidden)

    def decode_logits(self, z: Tensor) -> Tensor:
        """(B, latent_dim) → Bernoulli logits (B,1,28,28)."""
        logits: Tensor = self.decoder(z)
        return logits

    def decode(self, z: Tensor) -> Tensor:
        """(B, latent_dim) → Bernoulli means (B,1,28,28) in [0,1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        mean, log_variance = self.encode(x)
        z = sample_posterior(mean, log_variance, generator)
        return self.decode_logits(z), mean, log_variance


def sample_posterior(mean: Tensor, log_variance: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Reparameterisation: z = mean + exp(log_variance / 2) * eps, eps ~ N(0, I)."""
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * log_variance) * eps


def kl_divergence(mean: Tensor, log_variance: Tensor) -> Tensor:
    """KL(N(mean, diag exp(log_variance)) || N(0, I)) in nats, (B,)."""
    return 0.5 * (mean.pow(2) + log_variance.exp() - 1.0 - log_variance).sum(dim=1)


def likelihood_targets(model: VAE, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The pixels the Bernoulli likelihood scores: x itself, or x_b ~ Bernoulli(x) for a binarized VAE."""
    if not model.config.binarized:
        return x
    uniform = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (uniform < x).to(x.dtype)


def negative_elbo(model: VAE, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(reconstruction nats (B,), KL nats (B,)); -ELBO = their sum. One posterior sample per image.

    The encoder sees the same pixels the likelihood scores (binarised ones for a binarized VAE).
    """
    targets = likelihood_targets(model, x, generator)
    logits, mean, log_variance = model(targets, generator)
    recon = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).sum(dim=1)
    return recon, kl_divergence(mean, log_variance)


# ---------------------------------------------------------------- DCGAN


@dataclass(frozen=True)
class GeneratorConfig:
    latent_dim: int = 64
    channels: int = 32  # width at 14x14; 7x7 has twice this
    refine: bool = True  # a 3x3 conv-BN-ReLU after the 7x7 projection and after the 14x14 upsampling


class Generator(nn.Module):
    """DCGAN generator (Radford et al. 2016) for 28x28: linear → 7x7 → 14x14 → 28x28.

    With `refine`, each resolution below 28x28 gets a 3x3 convolution before the next upsampling:
    strokes are drawn by a stack of transposed 4x4 convolutions otherwise, whose small receptive
    field leaves digits locally sharp but globally incoherent (a broken 8, a 4 fused into a 9).
    """

    kind: ClassVar[str] = "gan"
    image_size: ClassVar[int] = IMAGE_SIZE

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.metadata: dict[str, str] = {}  # the file header, once loaded
        self.latent_dim = config.latent_dim
        c = config.channels
        layers: list[nn.Module] = [
            nn.Linear(config.latent_dim, 2 * c * 49, bias=False),
            nn.BatchNorm1d(2 * c * 49),
            nn.ReLU(),
            nn.Unflatten(1, (2 * c, 7, 7)),
        ]
        if config.refine:
            layers += _conv_bn_relu(2 * c, 2 * c)
        layers += [nn.ConvTranspose2d(2 * c, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        if config.refine:
            layers += _conv_bn_relu(c, c)
        layers += [nn.ConvTranspose2d(c, 1, 4, 2, 1)]
        self.net = nn.Sequential(*layers)

    def decode_logits(self, z: Tensor) -> Tensor:
        logits: Tensor = self.net(z)
        return logits

    def decode(self, z: Tensor) -> Tensor:
        """(B, latent_dim) → images (B,1,28,28) in [0,1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, z: Tensor) -> Tensor:
        return self.decode(z)


def _conv_bn_relu(channels_in: int, channels_out: int) -> list[nn.Module]:
    return [nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False), nn.BatchNorm2d(channels_out), nn.ReLU()]


@dataclass(frozen=True)
class DiscriminatorConfig:
    channels: int = 32
    deep: bool = True  # a third strided conv (7x7 → 4x4, 4x the width) before the linear output


class Discriminator(nn.Module):
    """DCGAN discriminator (a hinge-loss critic); used in training only (the store keeps the generator)."""

    kind: ClassVar[str] = "gan-discriminator"
    image_size: ClassVar[int] = IMAGE_SIZE

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        sn = nn.utils.parametrizations.spectral_norm
        # Spectral normalisation (Miyato et al. 2018) instead of BatchNorm: a Lipschitz-bounded critic
        # whose gradients stay informative, which keeps the generator from collapsing onto a few modes
        # (a BatchNorm discriminator, tried instead, left one digit class at 1.3 % of the samples).
        layers: list[nn.Module] = [
            sn(nn.Conv2d(1, c, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            sn(nn.Conv2d(c, 2 * c, 4, 2, 1)),
            nn.LeakyReLU(0.2),
        ]
        if config.deep:
            layers += [
                sn(nn.Conv2d(2 * c, 4 * c, 3, 2, 1)),
                nn.LeakyReLU(0.2),
                nn.Flatten(),
                sn(nn.Linear(4 * c * 16, 1)),
            ]
        else:
            layers += [nn.Flatten(), sn(nn.Linear(2 * c * 49, 1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B,1,28,28) in [0,1] → real/fake scores (B,)."""
        out: Tensor = self.net(x * 2.0 - 1.0)
        return out.squeeze(1)


# ---------------------------------------------------------------- classifier


@dataclass(frozen=True)
class ClassifierConfig:
    channels: int = 32
    features: int = 128
    classes: int = 10
    dropout: float = 0.3


class Classifier(nn.Module):
    """Small CNN: two conv blocks (3x3 conv-BN-ReLU twice, 2x2 max-pool), a feature layer, logits."""

    kind: ClassVar[str] = "classifier"
    image_size: ClassVar[int] = IMAGE_SIZE

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.metadata: dict[str, str] = {}  # the file header, once loaded
        c = config.channels

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]

        self.body = nn.Sequential(
            *block(1, c),
            *block(c, 2 * c),
            nn.Flatten(),
            nn.Linear(2 * c * 49, config.features, bias=False),
            nn.BatchNorm1d(config.features),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.features, config.classes)

    def features(self, x: Tensor) -> Tensor:
        """(B,1,28,28) in [0,1] → penultimate features (B, features) (for Fréchet distances)."""
        out: Tensor = self.body(x - 0.5)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """(B,1,28,28) in [0,1] → class logits (B, classes)."""
        out: Tensor = self.head(self.dropout(self.features(x)))
        return out


# ---------------------------------------------------------------- files

LatentModel = VAE | Generator | Classifier

_KINDS: dict[str, tuple[type[nn.Module], type[Any]]] = {
    "vae": (VAE, VAEConfig),
    "gan": (Generator, GeneratorConfig),
    "gan-discriminator": (Discriminator, DiscriminatorConfig),
    "classifier": (Classifier, ClassifierConfig),
}


def save_model(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write `model` as safetensors; the header holds its kind and config plus `metadata` (strings)."""
    kind = getattr(model, "kind", None)
    if kind not in _KINDS:
        raise TypeError(f"cannot save {type(model).__name__}: not a latent model")
    config = asdict(model.config)  # type: ignore[call-overload]
    write_checkpoint(model, path, FORMAT, {**(metadata or {}), "kind": kind, "config": json.dumps(config)})


def _train_command_for(path: Path) -> str:
    stem = path.stem
    if "classifier" in stem:
        return f"genserve train classifier --name {stem}"
    if "gan" in stem:
        return f"genserve train gan --name {stem}"
    return f"genserve train vae --name {stem}"


def read_metadata(path: Path) -> dict[str, str]:
    """The header of a latent model file (kind, config and what the trainer recorded)."""
    if not path.exists():
        raise LatentModelError(
            f"latent model file {path} is missing; make it with `{_train_command_for(path)}` "
            "(the manifest entry, if any, records the exact command)"
        )
    return read_header(path, FORMAT, "genserve latent model")


def build_model(kind: str, config: dict[str, Any]) -> nn.Module:
    if kind not in _KINDS:
        raise LatentModelError(f"unknown latent model kind {kind!r}; kinds: {', '.join(_KINDS)}")
    model_class, config_class = _KINDS[kind]
    return model_class(config_class(**config))


def load_model(path: Path, device: torch.device | None = None) -> VAE | Generator | Classifier:
    """Rebuild the model stored at `path`, in eval mode with gradients off, on `device` (CPU by default)."""
    metadata = read_metadata(path)
    model = build_model(metadata["kind"], json.loads(metadata["config"]))
    if not isinstance(model, VAE | Generator | Classifier):
        raise LatentModelError(f"{path} holds a {metadata['kind']}, which is not served")
    load_weights(model, path, device or torch.device("cpu"))
    model.metadata = metadata
    return model
