"""`genserve client sample|interpolate|manifold|concept`: the latent service through the gateway, as PNG sheets.

Each command writes one PNG: the model's 28x28 images side by side (a grid for samples), scaled
up so they can be looked at.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from genserve.commands.client import AddressOption, KeyOption, _floats, _read_image, client_for

if TYPE_CHECKING:
    import numpy as np

    from genserve.client import Client, ImageResult

ModelOption = Annotated[str, typer.Option(help="Latent model (default: the service's default).")]
ScaleOption = Annotated[int, typer.Option(help="Enlarge each 28x28 image this many times (nearest pixel).")]


def _sheet(images: list[ImageResult], columns: int, scale: int, output: Path) -> None:
    """Tile the images row-major into one PNG, `columns` wide, with 2-pixel gaps."""
    from PIL import Image

    tiles = [image.image().convert("L") for image in images]
    width, height = tiles[0].size
    rows = math.ceil(len(tiles) / columns)
    gap = 2
    sheet = Image.new("L", (columns * (width + gap) - gap, rows * (height + gap) - gap), 255)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        sheet.paste(tile, (column * (width + gap), row * (height + gap)))
    if scale > 1:
        sheet = sheet.resize((sheet.width * scale, sheet.height * scale), Image.Resampling.NEAREST)
    sheet.save(output)
    typer.echo(f"wrote {output} ({len(tiles)} images, {sheet.width}x{sheet.height})")


def _point(image: Path | None, seed: int | None, model: str, client: Client) -> bytes | np.ndarray:
    """An image file's bytes, or the prior point a seed draws (fetched with sample)."""
    if image is not None:
        return _read_image(image)
    return client.sample(1, model=model, seed=seed or 0, return_latents=True).latents[0]


def sample(
    output: Annotated[Path, typer.Argument(help="Where to write the grid (PNG).")],
    model: ModelOption = "",
    n: Annotated[int, typer.Option(help="Images to draw.")] = 16,
    seed: Annotated[int | None, typer.Option(help="Same seed → same images.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Scale of the prior's spread, (0, 3].")] = None,
    truncation: Annotated[float, typer.Option(help="Redraw components beyond this (0 = off).")] = 0.0,
    columns: Annotated[int, typer.Option(help="Images per row.")] = 8,
    scale: ScaleOption = 3,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """Draw new images from a VAE's or GAN's prior."""
    with client_for(address, api_key) as client:
        drawn = client.sample(n, model=model, seed=seed, temperature=temperature, truncation=truncation)
    typer.echo(f"{drawn.model}, seed {drawn.seed}")
    _sheet(drawn.images, columns, scale, output)


def interpolate(
    output: Annotated[Path, typer.Argument(help="Where to write the strip (PNG).")],
    model: ModelOption = "",
    start: Annotated[Path | None, typer.Option(help="Start image (VAE), else --start-seed.")] = None,
    end: Annotated[Path | None, typer.Option(help="End image (VAE), else --end-seed.")] = None,
    start_seed: Annotated[int, typer.Option(help="Seed of the start's prior point.")] = 1,
    end_seed: Annotated[int, typer.Option(help="Seed of the end's prior point.")] = 2,
    steps: Annotated[int, typer.Option(help="Frames, ends included.")] = 10,
    method: Annotated[str, typer.Option(help="slerp (default) or lerp.")] = "slerp",
    scale: ScaleOption = 3,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """A walk between two images or two prior points."""
    if method not in ("slerp", "lerp"):
        raise typer.BadParameter(f"--method {method!r}: choose from slerp, lerp")
    with client_for(address, api_key) as client:
        frames = client.interpolate(
            _point(start, start_seed, model, client),
            _point(end, end_seed, model, client),
            steps=steps,
            method=method,
            model=model,
        )
    _sheet(frames.images, len(frames.images), scale, output)


def manifold(
    output: Annotated[Path, typer.Argument(help="Where to write the grid (PNG).")],
    model: ModelOption = "mnist-vae-2d",
    grid: Annotated[int, typer.Option(help="Tiles per side, 2..30.")] = 15,
    quantile: Annotated[float, typer.Option(help="The grid spans quantile .. 1 - quantile of the prior.")] = 0.05,
    scale: ScaleOption = 2,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """The decoded grid over a 2-d latent space."""
    from PIL import Image

    with client_for(address, api_key) as client:
        reply = client.manifold(model=model, grid_size=grid, quantile=quantile)
    image = reply.grid.image()
    image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST).save(output)
    typer.echo(f"wrote {output} ({reply.grid_size}x{reply.grid_size} tiles)")


def concept(
    output: Annotated[Path, typer.Argument(help="Where to write the strip (PNG).")],
    name: Annotated[str, typer.Option("--concept", help="Concept name (see --list).")] = "thicker",
    model: ModelOption = "",
    image: Annotated[Path | None, typer.Option(help="Image to edit (VAE), else --seed's prior point.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the prior point to edit.")] = 1,
    strengths: Annotated[str, typer.Option(help="Comma-separated strengths, each in [-5, 5].")] = "-2,-1,0,1,2",
    list_concepts: Annotated[bool, typer.Option("--list", help="List the model's concepts and stop.")] = False,
    scale: ScaleOption = 3,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """Edit an image along a concept vector at several strengths: a strip of edits."""
    with client_for(address, api_key) as client:
        if list_concepts:
            for item in client.list_concepts(model=model):
                typer.echo(f"{item.name:<16} {item.source:<9} norm {item.norm:6.2f}  {item.description}")
            return
        edits = client.apply_concept(
            name, _point(image, seed, model, client), strengths=_floats(strengths), model=model
        )
    _sheet(edits.images, len(edits.images), scale, output)


def register(app: typer.Typer) -> None:
    for command in (sample, interpolate, manifold, concept):
        app.command(command.__name__)(command)
