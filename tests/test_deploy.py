"""Kubernetes files agree with the code they deploy (docker-compose, the image and Prometheus:
tests/deploy/test_container.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

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


def test_kubernetes_manifests_parse_and_match_ports() -> None:
    k8s = ROOT / "deploy" / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    documents = [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((k8s / name).read_text())]
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in documents}
    assert {("Deployment", role) for role in GRPC_PORTS} | {("StatefulSet", "redis")} <= kinds
    config = next(doc for doc in documents if doc["kind"] == "ConfigMap")
    assert set(config["data"]) <= KNOWN_VARIABLES
    for doc in documents:
        if doc["kind"] != "Deployment":
            continue
        role = doc["metadata"]["name"]
        container = doc["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["serve", role]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": GRPC_PORTS[role], "metrics": METRICS_PORTS[role]}
        assert container["readinessProbe"]["grpc"]["port"] == GRPC_PORTS[role]
