"""`genserve train classifier|vae|gan` end to end on a tiny synthetic data set: options reach the
trainers, the models are scored and saved, and the store's manifest records them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from genserve.cli import app
from genserve.common.model_store import ModelStore
from genserve.latent.models import Discriminator, Generator, load_model


def _train(store: Path, *arguments: str) -> None:
    common = ["--epochs", "1", "--batch-size", "64", "--threads", "1", "--store", str(store)]
    result = CliRunner().invoke(app, ["train", *arguments, *common])
    assert result.exit_code == 0, result.output


def test_train_commands_save_scored_models_into_the_store(store: Path) -> None:
    _train(store, "classifier", "--channels", "4")
    rates = ["--lr", "1e-3", "--d-lr", "4e-3", "--decay-from", "0.5"]
    _train(store, "gan", "--channels", "4", "--latent-dim", "3", *rates)
    _train(store, "vae", "--channels", "4", "--hidden", "8", "--latent-dim", "2", "--binarized")
    entries = ModelStore(store).entries()
    assert set(entries) == {"mnist-classifier", "mnist-dcgan", "mnist-vae-2d"}
    assert 0.0 <= entries["mnist-classifier"].metrics["test_accuracy"] <= 1.0

    gan = entries["mnist-dcgan"]
    assert gan.details["learning_rate"] == 1e-3
    assert gan.details["discriminator_learning_rate"] == 4e-3
    assert gan.details["rates_decay_from"] == 0.5
    assert gan.details["scored_by"] == "mnist-classifier"
    assert 1.0 <= gan.metrics["inception_score"] <= 10.0
    assert sum(gan.metrics[f"class_share_{k}"] for k in range(10)) == pytest.approx(1.0)
    generator = load_model(ModelStore(store).verified_path(gan))
    assert isinstance(generator, Generator)
    assert (generator.latent_dim, generator.config.channels) == (3, 4)

    vae = entries["mnist-vae-2d"]
    assert vae.details["likelihood"] == "bernoulli-binarized"
    assert vae.metrics["test_neg_elbo_nats"] == pytest.approx(
        vae.metrics["test_recon_nats"] + vae.metrics["test_kl_nats"], abs=0.01
    )


def test_a_generative_model_needs_its_scoring_classifier(store: Path) -> None:
    result = CliRunner().invoke(app, ["train", "gan", "--epochs", "1", "--channels", "4", "--store", str(store)])
    assert result.exit_code != 0
    # The message is in a boxed panel wrapped to the terminal's width (where it breaks depends on
    # the store's path): compare words, not lines.
    words = " ".join(result.output.replace("│", " ").split())
    assert "genserve train classifier --dataset mnist" in words, result.output


@pytest.mark.parametrize("larger", [True, False])
def test_both_gan_shapes_map_noise_to_images_and_images_to_scores(larger: bool) -> None:
    import torch

    from genserve.latent.models import DiscriminatorConfig, GeneratorConfig

    generator = Generator(GeneratorConfig(latent_dim=3, channels=4, refine=larger)).eval()
    critic = Discriminator(DiscriminatorConfig(channels=4, deep=larger))
    with torch.no_grad():
        images = generator.decode(torch.randn(5, 3))
        assert images.shape == (5, 1, 28, 28)
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        assert critic(images).shape == (5,)
