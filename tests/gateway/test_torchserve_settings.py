"""Choosing TorchServe as a family's backend: the settings, the token file, and what TorchServe's own
statuses become (no TorchServe needed; tests/torchserve runs a real one)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from genserve.common.config import ConfigError, GatewaySettings, from_env
from genserve.gateway.torchserve import TorchServeToken, read_token_file, torchserve_models, translate_status


def test_a_family_goes_to_its_genserve_service_unless_torchserve_is_chosen() -> None:
    settings = from_env(GatewaySettings, {})
    assert torchserve_models(settings, "text") is None and torchserve_models(settings, "vision") is None
    chosen = from_env(
        GatewaySettings,
        {"GENSERVE_TEXT_BACKEND": "torchserve", "GENSERVE_TEXT_TORCHSERVE_MODELS": " shakespeare-lstm, other ,"},
    )
    assert torchserve_models(chosen, "text") == ["shakespeare-lstm", "other"]
    assert torchserve_models(chosen, "latent") is None


def test_misconfigured_backends_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match=r"GENSERVE_LATENT_BACKEND='triton': choose one of genserve, torchserve"):
        torchserve_models(from_env(GatewaySettings, {"GENSERVE_LATENT_BACKEND": "triton"}), "latent")
    with pytest.raises(ConfigError, match="needs GENSERVE_TEXT_TORCHSERVE_MODELS"):
        torchserve_models(from_env(GatewaySettings, {"GENSERVE_TEXT_BACKEND": "torchserve"}), "text")


def test_the_token_comes_from_torchserve_s_key_file_or_a_bare_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key_file.json"
    key_file.write_text(json.dumps({"management": {"key": "m-key"}, "inference": {"key": "i-key", "expiration": 1}}))
    assert read_token_file(key_file) == "i-key"
    bare = tmp_path / "token"
    bare.write_text("  s3cret\n")
    assert TorchServeToken("ignored", str(bare)).metadata() == (("authorization", "Bearer s3cret"),)
    assert TorchServeToken("fixed", "").metadata() == (("authorization", "Bearer fixed"),)
    assert TorchServeToken("", "").metadata() == ()
    for content, complaint in [('{"management": {}}', "not TorchServe's key_file.json"), ("a b", "no single key")]:
        bare.write_text(content)
        with pytest.raises(ConfigError, match=complaint):
            read_token_file(bare)
    with pytest.raises(ConfigError, match="cannot be read"):
        TorchServeToken("", str(tmp_path / "absent"))


@pytest.mark.parametrize(
    ("code", "details", "expected", "says"),
    [
        (grpc.StatusCode.INTERNAL, "Model not found: m", grpc.StatusCode.NOT_FOUND, "no model 'm' registered"),
        (
            grpc.StatusCode.INTERNAL,
            'Model "m" has no worker to serve inference request. Please use scale workers API to add workers.',
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "busy",
        ),
        (grpc.StatusCode.PERMISSION_DENIED, "Token Authorization failed", grpc.StatusCode.UNAVAILABLE, "token"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline"),
        (grpc.StatusCode.INTERNAL, "Prediction failed", grpc.StatusCode.INTERNAL, "TorchServe at 127.0.0.1:7070"),
    ],
)
def test_torchserve_statuses_become_genserve_s(
    code: grpc.StatusCode, details: str, expected: grpc.StatusCode, says: str
) -> None:
    error = translate_status("text", "127.0.0.1:7070", "m", code, details)
    assert error.code == expected and says in error.message
