"""`genserve export torchserve`: a committed text or latent model as a TorchServe archive (.mar).

The archive (torch-model-archiver's Python API, no subprocess) holds:
- the model's safetensors file from the store (`--serialized-file`), checked against its sha256;
- `genserve-model.json`: the model's manifest entry, with the genserve version that wrote it;
- `genserve_handler.py`: one import, `handle` from genserve.torchserve.handler.
genserve itself is not copied into the archive: TorchServe's Python must have it installed (the
`torchserve` extra installs TorchServe into genserve's environment), so the handler runs exactly
the code of the services it stands in for.
"""

from __future__ import annotations

import json
import tempfile
from importlib import metadata
from pathlib import Path

from genserve.common.model_store import ModelStore, ModelStoreError
from genserve.torchserve.handler import ENTRY_FILE

ENTRY_MODULE = "genserve_handler.py"
FAMILIES = ("text", "latent")
# Latent entries a TorchServe archive can serve: generators that turn points into images.
LATENT_ARCHITECTURES = ("vae", "dcgan")

ENTRY_SOURCE = '''"""TorchServe entry point of a genserve model archive (written by `genserve export torchserve`).

genserve must be installed in TorchServe's Python (pip install 'genserve[torchserve]').
"""

from genserve.torchserve.handler import handle

__all__ = ["handle"]
'''


def exportable(store: ModelStore) -> list[str]:
    """The store's models an archive can hold: text models, and latent VAEs and GAN generators."""
    return sorted(
        entry.name
        for entry in store.entries().values()
        if entry.family == "text" or (entry.family == "latent" and entry.architecture in LATENT_ARCHITECTURES)
    )


def export_archive(store: ModelStore, name: str, out: Path) -> Path:
    """Write `out/<name>.mar` (replacing one there) and return its path."""
    entry = store.entries().get(name)
    if entry is None or name not in exportable(store):
        raise ModelStoreError(
            f"{name!r} cannot be exported to TorchServe; exportable models in {store.manifest_path}: "
            f"{', '.join(exportable(store)) or 'none'}"
        )
    weights = store.verified_path(entry)
    try:
        from model_archiver.model_archiver_config import ModelArchiverConfig
        from model_archiver.model_packaging import generate_model_archive
    except ImportError as error:
        raise ModelStoreError(
            f"torch-model-archiver is not installed ({error}); install the extra: pip install -e '.[torchserve]'"
        ) from None
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="genserve-mar-") as staging:
        folder = Path(staging)
        (folder / ENTRY_MODULE).write_text(ENTRY_SOURCE, encoding="utf-8")
        described = {"format": 1, "genserve": metadata.version("genserve"), "entry": entry.to_json()}
        (folder / ENTRY_FILE).write_text(json.dumps(described, indent=2) + "\n", encoding="utf-8")
        generate_model_archive(
            ModelArchiverConfig(
                model_name=name,
                handler=str(folder / ENTRY_MODULE),
                version=entry.version,
                serialized_file=str(weights),
                extra_files=str(folder / ENTRY_FILE),
                export_path=str(out),
                archive_format="default",
                force=True,
            )
        )
    return out / f"{name}.mar"
