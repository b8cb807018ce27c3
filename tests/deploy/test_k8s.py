"""deploy/k8s: base and every overlay render with a real kustomize, validate strictly against the
Kubernetes 1.30 schemas and the CRDs' published schemas, and agree with the code they deploy.

All offline: kubernetes-validate ships the Kubernetes schemas, tests/deploy/schemas holds the
CRDs' (see its README.md), and kustomize is a local binary (tests/deploy/render.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from base64 import b64decode
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from genserve.client import AsyncClient
from genserve.common.config import ALL_SETTINGS, HttpSettings, PortSettings, ServerSettings, describe
from genserve.common.metrics import HttpMetrics
from genserve.http.app import create_app
from genserve.jobs import records, scripts
from tests.deploy.render import (
    K8S,
    LOCAL_SECRETS,
    ROOT,
    TARGETS,
    Doc,
    build,
    copy_tree,
    env_of,
    find,
    of_kind,
    render,
    workloads,
)

KUBERNETES_VERSION = "1.30"
SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_v1alpha1_triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = "ghcr.io/genserve/genserve"
KNOWN_VARIABLES = {env for cls in ALL_SETTINGS for env, _, _ in describe(cls)}
# Not a genserve setting: the Secret value that REDIS_URL is built from with $(REDIS_PASSWORD).
ALLOWED_VARIABLES = {"REDIS_PASSWORD"}
PORTS = PortSettings()
GRPC_ROLES = ("gateway", "text", "vision", "latent", "worker")
# The HTTP front door: it serves HTTP (GENSERVE_HTTP_PORT) where the others serve gRPC.
HTTP_ROLE = "http"
ROLES = (*GRPC_ROLES, HTTP_ROLE)
MODEL_ROLES = ("text", "vision", "latent")
# Roles that run no model (no torch threads, no GPU).
FRONT_ROLES = ("gateway", HTTP_ROLE)
GRPC_PORTS = {role: getattr(PORTS, f"{role}_port") for role in GRPC_ROLES}
METRICS_PORTS = {role: getattr(PORTS, f"{role}_metrics_port") for role in ROLES}
REDIS_CLIENTS = {"gateway", "latent", "worker"}
REDIS_UID = 999  # the redis image's user
GENSERVE_UID = 10001  # deploy/Dockerfile's genserve user
# WorkerRole.stop waits this long for the job thread to checkpoint and hand its job back.
WORKER_HANDBACK_SECONDS = 60
MARGIN_SECONDS = 5
API_KEYS_FILE = "/var/run/secrets/genserve/api-keys/keys"
TLS_DIR = "/etc/genserve/tls"


def targets(*names: str) -> Any:
    return pytest.mark.parametrize("target", names or TARGETS)


def genserve_containers(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [
        (workload.name, container)
        for workload in workloads(docs)
        for container in workload.containers
        if container["image"].startswith(IMAGE + ":")
    ]


def validate_strictly(doc: Doc) -> None:
    """Against the Kubernetes schemas, unknown fields refused; a failure names the object and the path."""
    try:
        assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION
    except kubernetes_validate.ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path)
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {where}: {error.message}", pytrace=False)


def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text())
    return jsonschema.Draft7Validator(schema)


# --- rendering and schemas -------------------------------------------------------------------


@targets()
def test_renders_every_role(target: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[target]
    assert {d["metadata"]["name"] for d in of_kind(docs, "Deployment")} == set(ROLES)
    stateful = [d["metadata"]["name"] for d in of_kind(docs, "StatefulSet")]
    assert stateful == ([] if target == "overlays/prod" else ["redis"])
    namespaced = [d for d in docs if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"genserve"}


@targets()
def test_kubernetes_objects_validate_strictly(target: str, rendered: dict[str, list[Doc]]) -> None:
    checked = 0
    for doc in rendered[target]:
        if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
            continue
        validate_strictly(doc)
        checked += 1
    assert checked > 20


def test_kubectl_kustomize_renders_the_same(
    kustomize: list[str], local_secrets_tree: tuple[Path, dict[str, str]], rendered: dict[str, list[Doc]]
) -> None:
    """`kubectl apply -k` uses the kustomize built into kubectl (v5): the same objects come out."""
    kubectl = shutil.which("kubectl")
    if kubectl is None or kustomize[0] == kubectl:
        pytest.skip("kubectl is not on PATH, or it is the renderer already")
    tree, _ = local_secrets_tree
    with ThreadPoolExecutor(len(TARGETS)) as pool:
        again = pool.map(lambda target: render([kubectl, "kustomize"], tree, target), TARGETS)
        assert dict(zip(TARGETS, again, strict=True)) == rendered


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """The check above would catch a typo deep in a pod spec, not only at the top."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "x", "image": "x", "securityContext": {"runAsNonroot": True}}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


@targets()
def test_custom_resources_match_their_crds(target: str, rendered: dict[str, list[Doc]]) -> None:
    found = set()
    for doc in rendered[target]:
        key = (doc["apiVersion"], doc["kind"])
        if key[0].startswith(("keda.sh/", "monitoring.coreos.com/")):
            assert key in CRD_SCHEMAS, f"no vendored schema for {key}"
            errors = [error.message for error in crd_validator(*key).iter_errors(doc)]
            assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: {errors}"
            found.add(key)
    assert found == set(CRD_SCHEMAS)


def test_crd_schemas_reject_wrong_types() -> None:
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"}}
    scaled["spec"] = {"scaleTargetRef": {"name": "worker"}, "minReplicaCount": "one", "triggers": []}
    assert not crd_validator("keda.sh/v1alpha1", "ScaledObject").is_valid(scaled)
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"}}
    monitor["spec"] = {"selector": {}, "endpoints": [{"port": 9451}]}
    assert not crd_validator("monitoring.coreos.com/v1", "ServiceMonitor").is_valid(monitor)


def test_base_files_validate_without_a_renderer() -> None:
    """Each resource file of the base, as written (this part needs no kustomize)."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / "base" / name).read_text()):
            key = (doc["apiVersion"], doc["kind"])
            if key in CRD_SCHEMAS:
                assert crd_validator(*key).is_valid(doc), f"{name}: {doc['kind']}"
            else:
                validate_strictly(doc)


# --- the pods ---------------------------------------------------------------------------------


@targets()
def test_every_pod_meets_the_restricted_profile(target: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[target]
    namespace = find(docs, "Namespace", "genserve")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = list(workloads(docs))
    assert len(pods) == (6 if target == "overlays/prod" else 7)
    for workload in pods:
        where = f"{target} {workload.kind}/{workload.name}"
        pod = workload.pod
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, where
        uid = REDIS_UID if workload.name == "redis" else GENSERVE_UID
        assert security["runAsUser"] == uid and security["runAsGroup"] == uid and security["fsGroup"] == uid, where
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")), where
        assert pod.get("automountServiceAccountToken") is False, where
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "secret", "configMap", "persistentVolumeClaim"}, where
        for container in workload.containers:
            where = f"{target} {workload.name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert not context.get("privileged"), where
            assert context.get("runAsUser", uid) != 0, where
            assert all("hostPort" not in port for port in container.get("ports", [])), where
            assert "/tmp" in {mount["mountPath"] for mount in container.get("volumeMounts", [])}, where
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), f"{where}: {bound}"


@targets()
def test_torch_threads_follow_the_cpu_limit(target: str, rendered: dict[str, list[Doc]]) -> None:
    for name, container in genserve_containers(rendered[target]):
        if name in FRONT_ROLES:
            continue
        threads = env_of(container)["GENSERVE_TORCH_THREADS"]
        reference = {"resource": "limits.cpu", "divisor": "1"}
        assert threads["valueFrom"]["resourceFieldRef"] == reference, name


@targets()
def test_every_variable_is_a_setting(target: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[target]
    configs = [doc for doc in of_kind(docs, "ConfigMap") if doc["metadata"]["name"].startswith("genserve-config")]
    assert len(configs) == 1
    assert set(configs[0]["data"]) <= KNOWN_VARIABLES
    for name, container in genserve_containers(docs):
        assert container["envFrom"] == [{"configMapRef": {"name": configs[0]["metadata"]["name"]}}]
        defined: set[str] = set()
        for entry in container.get("env", []):
            assert entry["name"] in KNOWN_VARIABLES | ALLOWED_VARIABLES, f"{name}: {entry['name']}"
            # A $(VAR) expands only when VAR is defined earlier in the same list.
            for used in re.findall(r"\$\((\w+)\)", entry.get("value", "")):
                assert used in defined, f"{name}: {entry['name']} uses $({used}) before it is defined"
            defined.add(entry["name"])


@targets()
def test_roles_serve_their_ports(target: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[target]
    for role in GRPC_ROLES:
        container = find(docs, "Deployment", role)["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["serve", role]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": GRPC_PORTS[role], "metrics": METRICS_PORTS[role]}
        if role == "gateway" and target == "overlays/prod":
            continue  # TLS: see test_prod_gateway_speaks_tls
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == GRPC_PORTS[role], f"{role} {probe}"


@targets()
def test_http_role_serves_http_with_http_probes(target: str, rendered: dict[str, list[Doc]]) -> None:
    container = find(rendered[target], "Deployment", HTTP_ROLE)["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["serve", HTTP_ROLE]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": PORTS.http_port, "metrics": PORTS.http_metrics_port}
    # Ready while a gateway is SERVING; alive while the process answers HTTP, gateway or not (a
    # gateway outage must not restart every front door).
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    liveness = container["livenessProbe"]["httpGet"]
    assert liveness["port"] == "http" and liveness["path"] != "/healthz"
    app = http_app()
    assert {"/healthz", liveness["path"]} <= {app.openapi_url, *app.openapi()["paths"]}
    # The document the liveness probe reads is made in the process, with no call to a gateway.
    assert liveness["path"] == app.openapi_url


def http_app() -> Any:
    """The http role's application, as the role builds it (its metrics in a registry of their own)."""
    return create_app(HttpSettings(), HttpMetrics(CollectorRegistry()), lambda: AsyncClient())


@targets()
def test_images_carry_the_project_version(target: str, rendered: dict[str, list[Doc]]) -> None:
    tag = f"{VERSION}-cuda" if target == "overlays/gpu" else VERSION
    for name, container in genserve_containers(rendered[target]):
        assert container["image"] == f"{IMAGE}:{tag}", name
    images = {c["image"] for w in workloads(rendered[target]) for c in w.containers}
    assert all(image.startswith(IMAGE + ":") or re.fullmatch(r"redis:7\.2\.\d+", image) for image in images), images


@targets()
def test_drain_fits_in_the_termination_grace(target: str, rendered: dict[str, list[Doc]]) -> None:
    """preStop, then SIGTERM's drain (notice + grace), or a worker's hand-back, end before SIGKILL."""
    docs = rendered[target]
    config = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("genserve-config"))
    defaults = ServerSettings()
    notice = float(config["data"].get("GENSERVE_SHUTDOWN_NOTICE_SECONDS", defaults.shutdown_notice_seconds))
    grace = float(config["data"].get("GENSERVE_SHUTDOWN_GRACE_SECONDS", defaults.shutdown_grace_seconds))
    for role in ROLES:
        pod = find(docs, "Deployment", role)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if role == "worker":
            assert pre_stop == 0  # a delay would only hold its job back
            needed = notice + WORKER_HANDBACK_SECONDS
        else:
            assert pre_stop >= 3, role  # endpoints and DNS catch up before the drain starts
            needed = pre_stop + notice + grace
        assert pod["terminationGracePeriodSeconds"] >= needed + MARGIN_SECONDS, role


# --- scaling and disruption -----------------------------------------------------------------


@targets()
def test_autoscaling_and_disruption_budgets(target: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[target]
    minimum = 2 if target == "overlays/prod" else 1
    for role in (*FRONT_ROLES, *MODEL_ROLES):
        hpa = find(docs, "HorizontalPodAutoscaler", role)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": role}
        assert minimum <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        [metric] = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    for role in ROLES:
        deployment = find(docs, "Deployment", role)
        assert "replicas" not in deployment["spec"], f"{role}: the autoscaler owns the count"
        budget = find(docs, "PodDisruptionBudget", role)
        assert budget["spec"]["selector"] == deployment["spec"]["selector"]
        [spread] = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
        assert spread["labelSelector"] == deployment["spec"]["selector"]


@targets()
def test_keda_scales_workers_on_the_job_stream(target: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[target]
    scaled = find(docs, "ScaledObject", "worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "worker"
    assert scaled["minReplicaCount"] >= 1  # a dead worker's job is resumed only by a live one
    assert scaled["maxReplicaCount"] > scaled["minReplicaCount"]
    triggers = scaled["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    assert any("lagCount" in t["metadata"] for t in triggers)
    authentications = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "TriggerAuthentication")}
    for trigger in triggers:
        metadata = trigger["metadata"]
        assert metadata["stream"] == records.QUEUE
        assert metadata["consumerGroup"] == scripts.GROUP
        counts = [metadata[key] for key in ("lagCount", "pendingEntriesCount") if key in metadata]
        assert len(counts) == 1 and int(counts[0]) >= 1
        authentication = authentications[trigger["authenticationRef"]["name"]]
        references = {ref["parameter"]: (ref["name"], ref["key"]) for ref in authentication["secretTargetRef"]}
        assert references["password"] == ("genserve-redis", "password")
        if target == "overlays/prod":
            assert "address" not in metadata and references["address"] == ("genserve-redis", "address")
        else:
            assert metadata["address"] == "redis-0.redis.genserve.svc.cluster.local:6379"


# --- services, network, monitoring ------------------------------------------------------------


@targets()
def test_gateway_reaches_model_replicas_through_headless_services(target: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[target]
    gateway = env_of(find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0])
    for role in MODEL_ROLES:
        name = f"{role}-headless"
        address = f"dns:///{name}.genserve.svc.cluster.local:{GRPC_PORTS[role]}"
        assert gateway[f"GENSERVE_{role.upper()}_ADDR"]["value"] == address
        service = find(docs, "Service", name)["spec"]
        assert service["clusterIP"] == "None"
        assert service["selector"] == {"app": role}
        assert {"name": "grpc", "port": GRPC_PORTS[role], "targetPort": "grpc"} in service["ports"]
    public = find(docs, "Service", "gateway")["spec"]
    assert public["ports"] == [{"name": "grpc", "port": GRPC_PORTS["gateway"], "targetPort": "grpc"}]


@targets()
def test_http_role_reaches_every_gateway_and_is_public(target: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[target]
    env = env_of(find(docs, "Deployment", HTTP_ROLE)["spec"]["template"]["spec"]["containers"][0])
    # The headless Service's DNS name: every gateway pod, balanced per call (genserve.common.balancing).
    address = f"dns:///gateway-headless.genserve.svc.cluster.local:{GRPC_PORTS['gateway']}"
    assert env["GENSERVE_HTTP_GATEWAY_ADDR"]["value"] == address
    headless = find(docs, "Service", "gateway-headless")["spec"]
    assert headless["clusterIP"] == "None" and headless["selector"] == {"app": "gateway"}
    assert {"name": "grpc", "port": GRPC_PORTS["gateway"], "targetPort": "grpc"} in headless["ports"]
    public = find(docs, "Service", HTTP_ROLE)["spec"]
    assert public["type"] == "LoadBalancer" and public["selector"] == {"app": HTTP_ROLE}
    assert public["ports"] == [{"name": "http", "port": PORTS.http_port, "targetPort": "http"}]


@targets()
def test_service_monitor_scrapes_every_role(target: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[target]
    [monitor] = of_kind(docs, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    scraped = {}
    for service in of_kind(docs, "Service"):
        labels = service["metadata"].get("labels", {})
        if selector.items() <= labels.items():
            [port] = [p for p in service["spec"]["ports"] if p["name"] == "metrics"]
            scraped[service["spec"]["selector"]["app"]] = port["port"]
    assert scraped == METRICS_PORTS
    for role, port in METRICS_PORTS.items():  # and for a Prometheus that discovers pods by annotation
        annotations = find(docs, "Deployment", role)["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port)}


@targets()
def test_network_policies(target: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[target]
    policies = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "NetworkPolicy")}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    # Only the gateway's and the http role's policies let in traffic from anywhere, each on its
    # public port only.
    open_ones = [name for name, spec in policies.items() for rule in spec.get("ingress", []) if "from" not in rule]
    assert sorted(open_ones) == ["gateway-from-anywhere", "http-from-anywhere"]
    [rule] = policies["gateway-from-anywhere"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": GRPC_PORTS["gateway"]}]
    assert policies["http-from-anywhere"]["podSelector"] == {"matchLabels": {"app": HTTP_ROLE}}
    [rule] = policies["http-from-anywhere"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": PORTS.http_port}]
    # The http role's calls reach the gateways even if gateway-from-anywhere is narrowed.
    assert policies["gateway-from-http"]["podSelector"] == {"matchLabels": {"app": "gateway"}}
    assert policies["gateway-from-http"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"app": HTTP_ROLE}}}],
         "ports": [{"protocol": "TCP", "port": GRPC_PORTS["gateway"]}]}
    ]  # fmt: skip
    for role in MODEL_ROLES:
        spec = policies[f"{role}-from-gateway"]
        assert spec["podSelector"] == {"matchLabels": {"app": role}}
        assert spec["ingress"] == [
            {"from": [{"podSelector": {"matchLabels": {"app": "gateway"}}}],
             "ports": [{"protocol": "TCP", "port": GRPC_PORTS[role]}]}
        ]  # fmt: skip
    metrics = policies["metrics-from-monitoring"]
    [rule] = metrics["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert {p["port"] for p in rule["ports"]} == set(METRICS_PORTS.values())
    # Exactly the pods that use Redis carry the label that lets them reach it.
    for role in ROLES:
        template = find(docs, "Deployment", role)["spec"]["template"]
        uses_redis = "REDIS_URL" in env_of(template["spec"]["containers"][0])
        assert uses_redis == (role in REDIS_CLIENTS), role
        assert (template["metadata"]["labels"].get("genserve.io/redis-client") == "true") == uses_redis, role
    if target == "overlays/prod":
        assert "redis-from-clients" not in policies
    else:
        [rule] = policies["redis-from-clients"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
        assert {"podSelector": {"matchLabels": {"genserve.io/redis-client": "true"}}} in rule["from"]


# --- Redis and the Secrets --------------------------------------------------------------------


@targets("base", "overlays/dev", "overlays/gpu")
def test_in_cluster_redis(target: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[target]
    redis = find(docs, "StatefulSet", "redis")
    assert redis["spec"]["serviceName"] == "redis"
    assert find(docs, "Service", "redis")["spec"]["clusterIP"] == "None"
    container = redis["spec"]["template"]["spec"]["containers"][0]
    env = list(env_of(container).values())
    secret = {"secretKeyRef": {"name": "genserve-redis", "key": "password"}}
    assert env == [
        {"name": "REDIS_PASSWORD", "valueFrom": secret},
        {"name": "REDISCLI_AUTH", "valueFrom": secret},
    ]
    args = container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert args[args.index("--appendonly") + 1] == "yes"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = " ".join(container[probe]["exec"]["command"])
        assert "redis-cli" in command and "PONG" in command and "REDIS" not in command, probe
    for role in REDIS_CLIENTS:
        entries = find(docs, "Deployment", role)["spec"]["template"]["spec"]["containers"][0]["env"]
        names = [entry["name"] for entry in entries]
        assert entries[names.index("REDIS_PASSWORD")]["valueFrom"] == secret
        url = entries[names.index("REDIS_URL")]["value"]
        assert url == "redis://:$(REDIS_PASSWORD)@redis-0.redis.genserve.svc.cluster.local:6379/0"


@targets("base", "overlays/prod")
def test_no_secret_is_rendered_without_local_files(target: str, rendered: dict[str, list[Doc]]) -> None:
    assert of_kind(rendered[target], "Secret") == []


@targets("overlays/dev", "overlays/gpu")
def test_local_secrets_come_from_uncommitted_files(
    target: str, rendered: dict[str, list[Doc]], local_secrets_tree: tuple[Path, dict[str, str]]
) -> None:
    _, written = local_secrets_tree
    made = {d["metadata"]["name"]: d for d in of_kind(rendered[target], "Secret")}
    assert set(made) == {"genserve-api-keys", "genserve-redis"}
    assert b64decode(made["genserve-api-keys"]["data"]["keys"]).decode() == written["api-keys"]
    assert b64decode(made["genserve-redis"]["data"]["password"]).decode() == written["redis-password"]


def test_dev_overlay_does_not_build_without_its_secret_files(kustomize: list[str], tmp_path: Path) -> None:
    """No fallback key: without the files, `kubectl apply -k` fails rather than install a known one."""
    tree = tmp_path / "k8s"
    copy_tree(tree, with_local_secrets=False)
    done = build(kustomize, tree / "overlays" / "dev")
    assert done.returncode != 0
    assert "api-keys" in done.stderr or "redis-password" in done.stderr


def test_no_secret_file_is_committed() -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not on PATH")
    listing = subprocess.run([git, "ls-files", "deploy/k8s"], cwd=ROOT, capture_output=True, text=True, check=False)
    if listing.returncode != 0:
        pytest.skip(f"not a git checkout: {listing.stderr.strip()}")
    listed = listing.stdout.split()
    assert listed, "deploy/k8s is not tracked"
    under_secrets = [path for path in listed if path.startswith(str(Path("deploy/k8s") / LOCAL_SECRETS))]
    assert under_secrets == [str(Path("deploy/k8s") / LOCAL_SECRETS / ".gitignore")]
    for path in listed:
        text = (ROOT / path).read_text()
        assert "kind: Secret\n" not in text and "change-me" not in text, path


@targets()
def test_gateway_reads_api_keys_from_the_mounted_secret(target: str, rendered: dict[str, list[Doc]]) -> None:
    pod = find(rendered[target], "Deployment", "gateway")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(container)
    assert "GENSERVE_API_KEYS" not in env
    assert env["GENSERVE_API_KEYS_FILE"]["value"] == API_KEYS_FILE
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    [name] = [name for name, mount in mounts.items() if API_KEYS_FILE.startswith(mount["mountPath"] + "/")]
    assert mounts[name]["readOnly"] is True
    secret = volumes[name]["secret"]
    assert secret["secretName"] == "genserve-api-keys"
    assert secret["items"] == [{"key": "keys", "path": API_KEYS_FILE.rsplit("/", 1)[1]}]


# --- overlays ---------------------------------------------------------------------------------


def test_gpu_overlay_puts_models_and_workers_on_gpus(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/gpu"]
    for role in ROLES:
        pod = find(docs, "Deployment", role)["spec"]["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        if role in FRONT_ROLES:
            assert "nvidia.com/gpu" not in limits and "tolerations" not in pod
            continue
        assert limits["nvidia.com/gpu"] == 1, role
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert env_of(pod["containers"][0])["GENSERVE_DEVICE"]["value"] == "cuda"


def test_prod_uses_an_external_redis(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/prod"]
    assert not [d for d in docs if d["metadata"]["name"] == "redis"]
    for role in REDIS_CLIENTS:
        env = env_of(find(docs, "Deployment", role)["spec"]["template"]["spec"]["containers"][0])
        assert env["REDIS_URL"] == {
            "name": "REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": "genserve-redis", "key": "url"}},
        }
        assert "REDIS_PASSWORD" not in env


def test_prod_gateway_speaks_tls(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/prod"]
    pod = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(container)
    assert env["GENSERVE_TLS_CERT_FILE"]["value"] == f"{TLS_DIR}/tls.crt"
    assert env["GENSERVE_TLS_KEY_FILE"]["value"] == f"{TLS_DIR}/tls.key"
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == TLS_DIR]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "genserve-gateway-tls"
    for probe in ("readinessProbe", "livenessProbe"):
        assert "grpc" not in container[probe]
        command = container[probe]["exec"]["command"]
        assert command[:3] == ["genserve", "health", f"127.0.0.1:{GRPC_PORTS['gateway']}"]
        assert command[command.index("--tls-ca") + 1] == f"{TLS_DIR}/tls.crt"
        assert command[command.index("--tls-server-name") + 1]
    for role in MODEL_ROLES:  # only the gateway speaks TLS: the others keep native gRPC probes
        assert "grpc" in find(docs, "Deployment", role)["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]


def test_prod_http_role_trusts_the_gateway_tls(rendered: dict[str, list[Doc]]) -> None:
    """The gateways speak TLS in prod: the http role checks their certificate, and holds no key."""
    docs = rendered["overlays/prod"]
    gateway = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    probe = gateway["readinessProbe"]["exec"]["command"]
    public_name = probe[probe.index("--tls-server-name") + 1]
    pod = find(docs, "Deployment", HTTP_ROLE)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(container)
    ca = env["GENSERVE_HTTP_GATEWAY_TLS_CA"]["value"]
    # Dialled by the headless Service's name, checked against the name the certificate carries.
    assert env["GENSERVE_HTTP_GATEWAY_SERVER_NAME"]["value"] == public_name
    [mount] = [m for m in container["volumeMounts"] if ca.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "genserve-gateway-tls"
    assert volume["secret"]["items"] == [{"key": "tls.crt", "path": ca.rsplit("/", 1)[1]}]
    for target in ("base", "overlays/dev", "overlays/gpu"):  # plaintext gRPC inside the cluster there
        env = env_of(find(rendered[target], "Deployment", HTTP_ROLE)["spec"]["template"]["spec"]["containers"][0])
        assert "GENSERVE_HTTP_GATEWAY_TLS_CA" not in env, target
