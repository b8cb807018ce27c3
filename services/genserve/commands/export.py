"""`genserve export`: models in other servers' formats."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

export_app = typer.Typer(help="Export models for other model servers.", no_args_is_help=True)

StoreOption = Annotated[Path, typer.Option(envvar="GENSERVE_MODEL_STORE", help="Model store folder.")]


@export_app.command()
def torchserve(
    model: Annotated[list[str], typer.Option(help="Model to export (repeat for several); see `genserve models list`.")],
    out: Annotated[Path, typer.Option(help="Folder for the .mar files (TorchServe's --model-store).")] = Path(
        "var/torchserve/model-store"
    ),
    store: StoreOption = Path("model_store"),
) -> None:
    """Build a TorchServe model archive (.mar) of a text model, a VAE or a GAN generator
    (docs/torchserve.md); its handler runs genserve's own code, installed beside TorchServe."""
    from genserve.common.model_store import ModelStore
    from genserve.torchserve.archive import export_archive

    model_store = ModelStore(store)
    for name in model:
        typer.echo(export_archive(model_store, name, out))
