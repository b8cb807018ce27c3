"""Self-describing language-model checkpoints: safetensors weights + JSON metadata in the header.

The header carries the architecture, `model_args` and the vocabulary, so a file rebuilds its
model on its own. Nothing is pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from genserve.text.models import LanguageModel, build_model, model_args_of
from genserve.text.vocab import CharVocab

FORMAT = "genserve.text/1"


@dataclass
class LoadedModel:
    model: LanguageModel
    vocab: CharVocab
    architecture: str


def save_checkpoint(path: Path, model: LanguageModel, vocab: CharVocab) -> None:
    metadata = {
        "format": FORMAT,
        "architecture": model.architecture,
        "model_args": json.dumps(model_args_of(model)),
        "vocab": json.dumps(vocab.to_json()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path), metadata=metadata)


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a genserve text checkpoint (format {metadata.get('format')!r})")
    return metadata


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    metadata = read_metadata(path)
    vocab = CharVocab.from_json(json.loads(metadata["vocab"]))
    model = build_model(metadata["architecture"], json.loads(metadata["model_args"]))
    load_model(model, str(path), device=str(device))
    model.to(device).eval()
    return LoadedModel(model=model, vocab=vocab, architecture=metadata["architecture"])
