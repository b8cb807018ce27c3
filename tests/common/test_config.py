"""Settings come from the environment, fail clearly, and the README documents every one."""

from __future__ import annotations

from pathlib import Path

import pytest

from genserve.common.config import (
    ALL_SETTINGS,
    ConfigError,
    GatewaySettings,
    TextSettings,
    describe,
    from_env,
    markdown_table,
)

README = Path(__file__).resolve().parents[2] / "README.md"


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


def test_readme_table_matches_the_code() -> None:
    assert markdown_table() in README.read_text(), "regenerate the README table with `genserve config`"
