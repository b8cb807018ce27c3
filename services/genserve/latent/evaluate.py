"""Test-set figures of the latent models.

- classifiers: accuracy on the test split;
- VAEs: -ELBO = reconstruction + KL in nats per image on the test split (one posterior sample
  per image, seeded);
- generators (GAN, and a VAE's decoder on prior samples z ~ N(0, I)): with the classifier of the
  same data set, a classifier-based inception score exp(E_x KL(p(y|x) || p(y))) (at most 10),
  each class's share of the argmax labels, and the Fréchet distance between the classifier's
  penultimate features of the samples and of the test images (an "FID" in that feature space,
  not Inception-v3's; the train-vs-test distance is given as the floor).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from genserve.latent.models import VAE, Classifier, negative_elbo
from genserve.latent.train import to_tensor


@torch.no_grad()
def accuracy(classifier: Classifier, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    x = to_tensor(images)
    correct = 0
    for start in range(0, len(x), batch_size):
        predicted = classifier(x[start : start + batch_size]).argmax(dim=1)
        correct += int((predicted == torch.from_numpy(labels[start : start + batch_size])).sum())
    return correct / len(x)


@torch.no_grad()
def vae_negative_elbo(model: VAE, images: np.ndarray, seed: int = 0, batch_size: int = 500) -> dict[str, float]:
    """Mean reconstruction, KL and -ELBO in nats per image over `images`."""
    generator = torch.Generator().manual_seed(seed)
    x = to_tensor(images)
    recon_total = kl_total = 0.0
    for start in range(0, len(x), batch_size):
        recon, kl = negative_elbo(model, x[start : start + batch_size], generator)
        recon_total += float(recon.sum())
        kl_total += float(kl.sum())
    n = len(x)
    return {
        "test_recon_nats": recon_total / n,
        "test_kl_nats": kl_total / n,
        "test_neg_elbo_nats": (recon_total + kl_total) / n,
    }


@torch.no_grad()
def classifier_outputs(classifier: Classifier, x: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """(softmax probabilities (N, classes), penultimate features (N, F)) as float64."""
    probs, feats = [], []
    for start in range(0, len(x), batch_size):
        features = classifier.features(x[start : start + batch_size])
        feats.append(features.double())
        probs.append(torch.softmax(classifier.head(features), dim=1).double())
    return torch.cat(probs), torch.cat(feats)


def inception_score(probs: Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) with p(y) the mean of p(y|x)."""
    marginal = probs.mean(dim=0, keepdim=True)
    kl = (probs * (torch.log(probs.clamp_min(1e-12)) - torch.log(marginal.clamp_min(1e-12)))).sum(dim=1)
    return float(torch.exp(kl.mean()))


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||² + tr(Σa + Σb - 2 (Σa^½ Σb Σa^½)^½) between Gaussians fitted to feature rows."""
    mu_a, mu_b = a.mean(dim=0), b.mean(dim=0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * middle)


@torch.no_grad()
def sample_quality(
    decode: Callable[[Tensor], Tensor],
    latent_dim: int,
    classifier: Classifier,
    test_images: np.ndarray,
    samples: int = 10_000,
    seed: int = 0,
    batch_size: int = 500,
) -> dict[str, float]:
    """Inception score, class shares and Fréchet distance of `samples` images decode(z), z ~ N(0, I)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.cat(
        [
            decode(torch.randn(min(batch_size, samples - start), latent_dim, generator=generator))
            for start in range(0, samples, batch_size)
        ]
    )
    probs, feats = classifier_outputs(classifier, images)
    _, test_feats = classifier_outputs(classifier, to_tensor(test_images))
    shares = torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1]).double() / samples
    metrics = {
        "inception_score": inception_score(probs),
        "fid_classifier_features": frechet_distance(feats, test_feats),
        "min_class_share": float(shares.min()),
        "samples": float(samples),
    }
    metrics.update({f"class_share_{k}": float(share) for k, share in enumerate(shares)})
    return metrics


@torch.no_grad()
def reference_scores(classifier: Classifier, train_images: np.ndarray, test_images: np.ndarray) -> dict[str, float]:
    """The same figures for 10,000 real training images: what a perfect generator would get."""
    x = to_tensor(train_images[:10_000])
    probs, feats = classifier_outputs(classifier, x)
    _, test_feats = classifier_outputs(classifier, to_tensor(test_images))
    return {"inception_score": inception_score(probs), "fid_classifier_features": frechet_distance(feats, test_feats)}
