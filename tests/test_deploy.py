"""docker-compose, Kubernetes and Prometheus files agree with the code they deploy."""

from __future__ import annotations

from pathlib import Path

import yaml

from genserve.commands.serve import RoleName
from genserve.common.config import ALL_SETTINGS, PortSettings, describe

ROOT = Path(__file__).resolve().parents[1]
KNOWN_VARIABLES = {env for cls in ALL_SETTINGS for env, _, _ in describe(cls)}
PORTS = PortSettings()
GRPC_PORTS = {
    "gateway": PORTS.gateway_port,
    "text": PORTS.text_port,
    "vision": PORTS.vision_port,
    "latent": PORTS.latent_port,
    "worker": PORTS.worker_port,
}
METRICS_PORTS = {
    "gateway": PORTS.gateway_metrics_port,
    "text": PORTS.text_metrics_port,
    "vision": PORTS.vision_metrics_port,
    "latent": PORTS.latent_metrics_port,
    "worker": PORTS.worker_metrics_port,
}


def test_compose_runs_known_roles_with_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    roles = {name: spec for name, spec in compose["services"].items() if spec.get("command", [None])[0] == "serve"}
    assert set(roles) == {r.value for r in RoleName}
    for name, spec in roles.items():
        assert spec["command"] == ["serve", name]
        for variable in spec["environment"]:
            assert variable in KNOWN_VARIABLES, variable
        health = spec["healthcheck"]["test"]
        assert health[-1] == f"127.0.0.1:{GRPC_PORTS[name]}"
    assert compose["services"]["gateway"]["ports"] == [f"{PORTS.gateway_port}:{PORTS.gateway_port}"]


def test_prometheus_scrapes_every_metrics_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{role}:{port}" for role, port in METRICS_PORTS.items()}
