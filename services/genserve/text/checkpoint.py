"""Language-model checkpoints: safetensors weights, with the architecture, `model_args` and the
vocabulary in the header (common/checkpoint.py), so a file rebuilds its model on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from genserve.common.checkpoint import load_weights, read_header, write_checkpoint
from genserve.text.models import LanguageModel, build_model, model_args_of
from genserve.text.vocab import CharVocab

FORMAT = "genserve.text/1"


@dataclass
class LoadedModel:
    model: LanguageModel
    vocab: CharVocab
    architecture: str


def save_checkpoint(path: Path, model: LanguageModel, vocab: CharVocab) -> None:
    header = {
        "architecture": model.architecture,
        "model_args": json.dumps(model_args_of(model)),
        "vocab": json.dumps(vocab.to_json()),
    }
    write_checkpoint(model, path, FORMAT, header)


def read_metadata(path: Path) -> dict[str, str]:
    return read_header(path, FORMAT, "genserve text checkpoint")


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    metadata = read_metadata(path)
    vocab = CharVocab.from_json(json.loads(metadata["vocab"]))
    model = build_model(metadata["architecture"], json.loads(metadata["model_args"]))
    load_weights(model, path, device)
    return LoadedModel(model=model, vocab=vocab, architecture=metadata["architecture"])
