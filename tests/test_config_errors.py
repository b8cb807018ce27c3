"""A configuration mistake in any role ends it with one line naming the variable, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from genserve.common.processes import free_ports
from tests.conftest import MODEL_STORE


def serve(role: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    grpc_port, metrics_port = free_ports(2)
    command = [sys.executable, "-m", "genserve.cli", "serve", role, "--grpc-port", str(grpc_port)]
    command += ["--metrics-port", str(metrics_port)]
    environment = {**os.environ, "GENSERVE_MODEL_STORE": str(MODEL_STORE), **env}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, cwd=tmp_path)


@pytest.mark.parametrize(
    ("role", "env", "message"),
    [
        (
            "text",
            {"GENSERVE_TEXT_DEFAULT_MODEL": "nope"},
            "GENSERVE_TEXT_DEFAULT_MODEL='nope' is not a loaded text model; it may name: shakespeare-lstm, "
            "shakespeare-transformer",
        ),
        ("text", {"GENSERVE_TEXT_MODELS": "shakespeare-lstm,nope"}, "GENSERVE_TEXT_MODELS names 'nope'"),
        (
            "vision",
            {"GENSERVE_VISION_DEFAULT_MODEL": "nope"},
            "GENSERVE_VISION_DEFAULT_MODEL='nope' is not a loaded vision model; it may name: efficientnet-lite0, vgg16",
        ),
        ("vision", {"GENSERVE_VISION_MODELS": "resnet50"}, "GENSERVE_VISION_MODELS names 'resnet50'"),
        (
            "latent",
            {"GENSERVE_LATENT_MODELS": "mnist-dcgan", "GENSERVE_LATENT_DEFAULT_MODEL": "mnist-vae-16d"},
            "GENSERVE_LATENT_DEFAULT_MODEL='mnist-vae-16d' is not a loaded latent model; it may name: mnist-dcgan",
        ),
        ("latent", {"GENSERVE_LATENT_MODELS": "nope"}, "GENSERVE_LATENT_MODELS names 'nope'"),
        (
            "gateway",
            {"GENSERVE_API_KEYS": "alice:s3cret,:orphan"},
            "GENSERVE_API_KEYS entry 2 has an empty name or key",
        ),
        (
            "gateway",
            {"GENSERVE_TLS_CERT_FILE": "cert.pem"},
            "GENSERVE_TLS_CERT_FILE and GENSERVE_TLS_KEY_FILE go together",
        ),
        (
            "gateway",
            {"GENSERVE_API_KEYS_FILE": "absent-keys"},
            "GENSERVE_API_KEYS_FILE absent-keys cannot be read",
        ),
        (
            "worker",
            {"REDIS_URL": "redis://127.0.0.1:1/0", "GENSERVE_JOB_HEARTBEAT_SECONDS": "30"},
            "GENSERVE_JOB_HEARTBEAT_SECONDS (30.0) must be under half of GENSERVE_JOB_CLAIM_IDLE_SECONDS",
        ),
        ("text", {"GENSERVE_DEVICE": "cuda:7"}, "GENSERVE_DEVICE='cuda:7'"),
        ("latent", {"GENSERVE_LATENT_MAX_BATCH": "many"}, "GENSERVE_LATENT_MAX_BATCH='many' is not a valid int"),
        ("http", {"GENSERVE_HTTP_MAX_BODY_BYTES": "lots"}, "GENSERVE_HTTP_MAX_BODY_BYTES='lots' is not a valid int"),
        ("http", {"GENSERVE_HTTP_GATEWAY_TLS_CA": "absent.pem"}, "GENSERVE_HTTP_GATEWAY_TLS_CA absent.pem cannot be"),
    ],
)
def test_a_configuration_mistake_is_one_line(role: str, env: dict[str, str], message: str, tmp_path: Path) -> None:
    result = serve(role, env, tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert message in errors[0]
