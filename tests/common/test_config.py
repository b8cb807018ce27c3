"""Settings come from the environment, fail clearly, and docs/configuration.md documents every one."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from genserve.cli import app
from genserve.common.config import (
    ALL_SETTINGS,
    ConfigError,
    GatewaySettings,
    TextSettings,
    describe,
    from_env,
    markdown_table,
)

CONFIGURATION_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_environment_overrides_defaults() -> None:
    settings = from_env(TextSettings, {"GENSERVE_TEXT_MAX_TOKENS": "77", "GENSERVE_TEXT_MODELS": "a,b"})
    assert settings.max_tokens == 77
    assert settings.models == "a,b"
    assert settings.max_batch == TextSettings().max_batch


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="GENSERVE_TEXT_MAX_TOKENS='lots' is not a valid int"):
        from_env(TextSettings, {"GENSERVE_TEXT_MAX_TOKENS": "lots"})
    with pytest.raises(ConfigError, match="GENSERVE_DEFAULT_DEADLINE_SECONDS"):
        from_env(GatewaySettings, {"GENSERVE_DEFAULT_DEADLINE_SECONDS": "soon"})


def test_every_setting_has_a_unique_variable() -> None:
    names = [env for cls in ALL_SETTINGS for env, _, _ in describe(cls)]
    assert len(names) == len(set(names))


def test_documented_table_matches_the_code() -> None:
    assert markdown_table() in CONFIGURATION_DOC.read_text(encoding="utf-8"), (
        "regenerate the table with `genserve config --markdown docs/configuration.md`"
    )


def test_config_command_rewrites_a_stale_table_in_place(tmp_path: Path) -> None:
    document = tmp_path / "configuration.md"
    marker = "<!-- config-table: generated -->"
    stale = f"# Configuration\n\nintro\n\n{marker}\n| Variable |\n| `GONE` |\n<!-- /config-table -->\n\nafter\n"
    document.write_text(stale, encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "--markdown", str(document)])
    assert result.exit_code == 0, result.output
    assert document.read_text(encoding="utf-8") == (
        f"# Configuration\n\nintro\n\n{marker}\n{markdown_table()}\n<!-- /config-table -->\n\nafter\n"
    )


def test_config_command_refuses_a_file_without_markers(tmp_path: Path) -> None:
    document = tmp_path / "notes.md"
    document.write_text("# Notes\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "--markdown", str(document)])
    assert result.exit_code != 0
    assert document.read_text(encoding="utf-8") == "# Notes\n"
