"""Self-describing safetensors checkpoints: weights plus a string header that rebuilds the model.

Every model file genserve writes or serves carries a `format` key (which family's reader it
belongs to) and what that reader needs to rebuild the module (its architecture or kind and its
constructor config, a vocabulary, ...), so a file loads on its own; nothing is pickled. The
families keep their header keys; this module writes, reads and loads them the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from genserve.common.model_store import ModelStoreError


def write_checkpoint(model: nn.Module, path: Path, format_name: str, header: Mapping[str, str]) -> None:
    """Save `model`'s weights to `path` with `header` (strings) and `format` = format_name.

    Tied weights are stored once (safetensors' save_model drops the aliases).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path), metadata={**header, "format": format_name})


def read_header(path: Path, format_name: str, what: str) -> dict[str, str]:
    """The header of checkpoint `path`, checked to be of `format_name`; `what` names the file kind in errors."""
    if not path.exists():
        raise ModelStoreError(f"{what} file {path} is missing")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises its own types for a truncated or foreign file
        raise ModelStoreError(f"{path} is not a readable safetensors file: {error}") from None
    if header.get("format") != format_name:
        raise ModelStoreError(f"{path} is not a {what} (format {header.get('format')!r}, expected {format_name!r})")
    return header


def load_weights(model: nn.Module, path: Path, device: torch.device | str = "cpu") -> None:
    """Fill `model` (built from the header) with the file's weights, every key and shape, on `device`;
    then freeze it: eval mode, no weight gradients (inputs may still take gradients)."""
    load_model(model, str(path), strict=True, device=str(device))
    model.to(device).eval().requires_grad_(False)


def parameter_count(model: nn.Module) -> int:
    """Trainable weights and biases, a tensor shared by several layers (tied embeddings) counted once.

    Buffers (batch-norm running statistics) are not parameters and are not counted.
    """
    unique = {id(param): param.numel() for param in model.parameters()}
    return sum(unique.values())
