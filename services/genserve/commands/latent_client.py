"""`genserve client sample|interpolate|manifold|concept`: the latent service through the gateway, as PNG sheets.

Each command writes one PNG: the model's 28x28 images side by side (a grid for samples), scaled
up so they can be looked at.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from genserve.commands.client import AddressOption, KeyOption, _channel, _floats, _metadata, _read_image

ModelOption = Annotated[str, typer.Option(help="Latent model (default: the service's default).")]
ScaleOption = Annotated[int, typer.Option(help="Enlarge each 28x28 image this many times (nearest pixel).")]


def _sheet(images: list[Any], columns: int, scale: int, output: Path) -> None:
    """Tile the images (common_pb2.Image) row-major into one PNG, `columns` wide, with 2-pixel gaps."""
    from PIL import Image

    tiles = [Image.open(io.BytesIO(image.data)).convert("L") for image in images]
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


def _stub(channel: object) -> Any:
    from genserve.v1 import latent_pb2_grpc

    return latent_pb2_grpc.LatentServiceStub(channel)


def _point(image: Path | None, seed: int | None, model: str, channel: object, api_key: str) -> Any:
    """A LatentPoint from an image file, or the prior point a seed draws (fetched with Sample)."""
    from genserve.v1 import common_pb2, latent_pb2

    if image is not None:
        return latent_pb2.LatentPoint(image=common_pb2.Image(data=_read_image(image)))
    drawn = _stub(channel).Sample(
        latent_pb2.SampleRequest(model=model, n=1, seed=seed or 0, return_latents=True),
        timeout=60,
        metadata=_metadata(api_key),
    )
    return latent_pb2.LatentPoint(vector=drawn.latents[0])


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
    from genserve.v1 import latent_pb2

    request = latent_pb2.SampleRequest(model=model, n=n, truncation=truncation)
    if seed is not None:
        request.seed = seed
    if temperature is not None:
        request.temperature = temperature
    with _channel(address) as channel:
        reply = _stub(channel).Sample(request, timeout=60, metadata=_metadata(api_key))
    typer.echo(f"{reply.model}, seed {reply.seed}")
    _sheet(list(reply.images), columns, scale, output)


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
    from genserve.v1 import latent_pb2

    methods = {"slerp": latent_pb2.INTERPOLATION_METHOD_SLERP, "lerp": latent_pb2.INTERPOLATION_METHOD_LERP}
    if method not in methods:
        raise typer.BadParameter(f"--method {method!r}: choose from slerp, lerp")
    with _channel(address) as channel:
        request = latent_pb2.InterpolateRequest(
            model=model,
            start=_point(start, start_seed, model, channel, api_key),
            end=_point(end, end_seed, model, channel, api_key),
            steps=steps,
            method=methods[method],
        )
        reply = _stub(channel).Interpolate(request, timeout=60, metadata=_metadata(api_key))
    _sheet(list(reply.images), len(reply.images), scale, output)


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

    from genserve.v1 import latent_pb2

    with _channel(address) as channel:
        reply = _stub(channel).Manifold(
            latent_pb2.ManifoldRequest(model=model, grid_size=grid, quantile=quantile),
            timeout=60,
            metadata=_metadata(api_key),
        )
    image = Image.open(io.BytesIO(reply.grid.data))
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
    from genserve.v1 import latent_pb2

    with _channel(address) as channel:
        if list_concepts:
            listed = _stub(channel).ListConcepts(
                latent_pb2.ListConceptsRequest(model=model), timeout=60, metadata=_metadata(api_key)
            )
            for item in listed.concepts:
                typer.echo(f"{item.name:<16} {item.source:<9} norm {item.norm:6.2f}  {item.description}")
            return
        request = latent_pb2.ApplyConceptRequest(
            model=model,
            concept=name,
            point=_point(image, seed, model, channel, api_key),
            strengths=_floats(strengths),
        )
        reply = _stub(channel).ApplyConcept(request, timeout=60, metadata=_metadata(api_key))
    _sheet(list(reply.images), len(reply.images), scale, output)


def register(app: typer.Typer) -> None:
    for command in (sample, interpolate, manifold, concept):
        app.command(command.__name__)(command)
