"""The `genserve client` / `genserve jobs` commands on the client library, against the real stack."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from genserve.cli import app
from tests.client.conftest import API_KEY, LATENT_MODEL, Stack


def invoke(stack: Stack, *arguments: str, key: str = API_KEY, columns: int = 80) -> tuple[int, str]:
    outcome = CliRunner().invoke(
        app, [*arguments, "--address", stack.gateway.address, "--api-key", key], env={"COLUMNS": str(columns)}
    )
    return outcome.exit_code, outcome.output


def test_models_fit_80_columns_with_one_headline_metric(stack: Stack) -> None:
    code, output = invoke(stack, "client", "models")
    assert code == 0, output
    assert max(len(line) for line in output.splitlines()) <= 80
    assert "val loss 1." in output and "nats/char" in output and "inception score" in output
    assert "class_share" not in output and "…" not in output
    # One row per model, its full name first, nothing wrapped onto a second line.
    code, listed = invoke(stack, "client", "models", "--json")
    rows = [line.split() for line in output.splitlines() if line.strip()]
    for model in json.loads(listed):
        assert sum(row[0] == model["name"] for row in rows) == 1, model["name"]


def test_models_json_has_every_field(stack: Stack) -> None:
    code, output = invoke(stack, "client", "models", "--family", "latent", "--json")
    assert code == 0, output
    models = {model["name"]: model for model in json.loads(output)}
    model = models[LATENT_MODEL]
    assert {item["family"] for item in models.values()} == {"latent"}
    assert "class_share_0" in model["metrics"] and model["details"] and model["sha256"]


def test_text_streams_the_prompt_and_its_completion(stack: Stack) -> None:
    code, output = invoke(stack, "client", "text", "ROMEO:", "--max-tokens", "12", "--seed", "1")
    assert code == 0 and output.startswith("ROMEO:") and len(output.rstrip("\n")) == len("ROMEO:") + 12


def test_a_wrong_key_prints_the_status_and_exits_1(stack: Stack) -> None:
    code, output = invoke(stack, "client", "models", key="wrong")
    assert code == 1 and "error: UNAUTHENTICATED: invalid API key" in output


def test_jobs_submit_watch_writes_the_result(
    stack: Stack, tmp_path: Path, photo: Image.Image, painting: Image.Image
) -> None:
    photo.save(tmp_path / "photo.png")
    painting.save(tmp_path / "painting.png")
    output = tmp_path / "styled.png"
    code, shown = invoke(
        stack,
        "jobs",
        "submit",
        str(tmp_path / "photo.png"),
        "--style",
        str(tmp_path / "painting.png"),
        "--iterations",
        "6",
        "--max-size",
        "40",
        "--watch",
        "--output",
        str(output),
        columns=200,
    )
    assert code == 0, shown
    assert "queued" in shown and "succeeded" in shown and f"wrote {output} (40x" in shown
    assert Image.open(output).size[0] == 40


def test_latent_sample_writes_a_sheet(stack: Stack, tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.png"
    code, output = invoke(
        stack, "client", "sample", str(sheet), "--model", LATENT_MODEL, "--n", "4", "--seed", "2", "--columns", "4"
    )
    assert code == 0, output
    assert f"{LATENT_MODEL}, seed 2" in output and Image.open(sheet).size == ((4 * 30 - 2) * 3, 28 * 3)
