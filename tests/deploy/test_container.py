"""The image, docker-compose and Prometheus files: valid for their tools, and in step with the code.

Everything here runs offline and without a Docker daemon. The linters are pinned in pyproject's
dev extra (`make install`); promtool is not on PyPI, so its tests skip, saying why, where it is
absent (`make install` takes it from Debian's prometheus package where apt-get exists).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from genserve.commands.serve import RoleName
from genserve.common.config import ALL_SETTINGS, PortSettings, describe

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# The gateway reads its API keys from this file (one `name:key` per line), a compose secret.
API_KEYS_FILE = "GENSERVE_API_KEYS_FILE"
KNOWN_VARIABLES = {env for cls in ALL_SETTINGS for env, _, _ in describe(cls)}
PORTS = PortSettings()
GRPC_PORTS = {
    "gateway": PORTS.gateway_port,
    "text": PORTS.text_port,
    "vision": PORTS.vision_port,
    "latent": PORTS.latent_port,
    "worker": PORTS.worker_port,
}
# The http role answers its health check over HTTP.
HEALTH_CHECKS = {
    **{role: f"127.0.0.1:{port}" for role, port in GRPC_PORTS.items()},
    "http": f"http://127.0.0.1:{PORTS.http_port}/healthz",
}
METRICS_PORTS = {
    "gateway": PORTS.gateway_metrics_port,
    "text": PORTS.text_metrics_port,
    "vision": PORTS.vision_metrics_port,
    "latent": PORTS.latent_metrics_port,
    "worker": PORTS.worker_metrics_port,
    "http": PORTS.http_metrics_port,
}
REDIS_ROLES = {"gateway", "latent", "worker"}


def tool(name: str) -> str | None:
    """`name` from this Python's bin folder (the project's .venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tool(name)
    if path is None:
        pytest.fail(f"{name} is not installed: it is pinned in pyproject.toml's dev extra (`make install`)")
    return subprocess.run([path, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def promtool() -> str:
    path = tool("promtool")
    if path is None:
        pytest.skip(
            "promtool not found (on PATH or in .venv/bin): it is not on PyPI; `make install` extracts it from "
            "Debian's prometheus package where apt-get exists, else install Prometheus's promtool by hand"
        )
    return path


# ---- Dockerfile -----------------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        pending = f"{pending} {stripped}" if pending else stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        word, _, rest = pending.partition(" ")
        found.append((word.upper(), rest.strip()))
        pending = ""
    return found


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions, by stage name, in order (FROM included)."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for instruction, rest in instructions(text):
        if instruction == "FROM":
            name = rest.split()[-1] if " AS " in rest.upper() else str(len(result))
            current = result.setdefault(name, [])
        current.append((instruction, rest))
    return result


def copy_sources(stage: list[tuple[str, str]]) -> list[tuple[str | None, list[str]]]:
    """(--from stage or None for the build context, [sources]) of each COPY in a stage."""
    copies = []
    for instruction, rest in stage:
        if instruction != "COPY":
            continue
        words = rest.split()
        origin = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        paths = [w for w in words if not w.startswith("--")]
        copies.append((origin, paths[:-1]))
    return copies


STAGES = stages(DOCKERFILE.read_text())


def test_dockerfile_passes_hadolint_without_any_finding() -> None:
    result = run_tool("hadolint", "--no-color", "--failure-threshold", "style", str(DOCKERFILE))
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_pins_the_base_and_runs_as_a_numeric_user_with_a_health_check() -> None:
    names = list(STAGES)
    base = STAGES[names[0]][0][1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64} AS base", base), base
    for name in names[1:]:
        parent = STAGES[name][0][1].split()[0]
        assert parent in names[: names.index(name)], f"stage {name} starts from {parent}, not an earlier stage"
    runtime = dict(STAGES[names[-1]])
    assert names[-1] == "runtime"
    assert runtime["USER"] == "10001:10001"
    assert runtime["HEALTHCHECK"].endswith('CMD ["genserve", "health", "127.0.0.1:50051"]')
    assert runtime["ENTRYPOINT"] == '["genserve"]'
    assert "GENSERVE_MODEL_STORE=/app/model_store" in runtime["ENV"]
    assert f'org.opencontainers.image.version="{PYPROJECT["version"]}"' in runtime["LABEL"]
    deps = dict(STAGES["deps"])
    assert deps["ARG"] == "TORCH_VARIANT=cpu"
    assert "download.pytorch.org/whl/${TORCH_VARIANT}" in deps["RUN"]


def test_dependencies_and_weight_downloads_do_not_depend_on_the_code() -> None:
    # What each stage takes from the build context, and from which stages.
    context = {
        name: [p for origin, paths in copy_sources(stage) if origin is None for p in paths]
        for name, stage in STAGES.items()
    }
    parents = {name: {origin for origin, _ in copy_sources(stage) if origin} for name, stage in STAGES.items()}
    assert context["requirements"] == ["pyproject.toml", "deploy/requirements.py"]
    assert context["deps"] == [] and parents["deps"] == {"requirements"}
    assert context["packages"] == ["model_store/manifest.json", "deploy/requirements.py"]
    assert parents["packages"] == set()
    assert "services" in context["build"] and "services" not in context["models"]
    # In the image, the model store's layer comes before the code's.
    runtime = [(origin, paths) for origin, paths in copy_sources(STAGES["runtime"])]
    assert runtime == [("models", ["/app/model_store"]), ("build", ["/wheels"])]


def test_requirements_script_reads_the_pins_from_pyproject_and_the_manifest() -> None:
    script = ROOT / "deploy" / "requirements.py"

    def lines(*args: str) -> list[str]:
        return subprocess.run(
            [sys.executable, str(script), *args], capture_output=True, text=True, check=True
        ).stdout.split("\n")[:-1]

    assert lines(str(ROOT / "pyproject.toml")) == PYPROJECT["dependencies"]
    assert lines(str(ROOT / "pyproject.toml"), "build") == PYPROJECT["optional-dependencies"]["build"]
    assert lines(str(ROOT / "pyproject.toml"), "--only", "torch") == [
        d for d in PYPROJECT["dependencies"] if d.startswith("torch==")
    ]
    sources = lines(str(ROOT / "model_store" / "manifest.json"))
    assert sources and all(re.fullmatch(r"[\w.-]+==[\w.]+ --hash=sha256:[0-9a-f]{64}", s) for s in sources), sources


# ---- .dockerignore -------------------------------------------------------------------------------


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (is an exception, regex), in order, with Docker's matching rules."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        text = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(text):
            if text.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif text.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif text[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif text[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif text[i] == "[":
                end = text.index("]", i)
                regex, i = regex + text[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(text[i]), i + 1
        patterns.append((negate, re.compile(regex)))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves `path` out of the build context: the last pattern that matches it or
    one of its parent folders decides."""
    parts = path.split("/")
    result = False
    for negate, regex in patterns:
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negate
    return result


def test_dockerignore_sends_exactly_what_the_dockerfile_copies() -> None:
    patterns = ignore_patterns()
    sources = {p for stage in STAGES.values() for origin, paths in copy_sources(stage) if origin is None for p in paths}
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for path in tracked:
        copied = any(path == s or path.startswith(f"{s}/") for s in sources)
        assert ignored(path, patterns) != copied, (
            f"{path}: {'copied but ignored' if copied else 'sent but never copied'}"
        )
    for path in [
        ".git/HEAD",
        ".venv/bin/python",
        "var/packages/x.whl",
        "secrets/api_keys",
        ".env",
        "tests/test_stack.py",
        "model_store/vision/vgg16.safetensors",
        "services/genserve/v1/jobs_pb2.py",
        "services/genserve/v1/jobs_pb2_grpc.pyi",
        "services/genserve/__pycache__/cli.cpython-311.pyc",
        "services/genserve.egg-info/PKG-INFO",
    ]:
        assert ignored(path, patterns), f"{path} would be sent to the Docker daemon"


# ---- docker-compose ------------------------------------------------------------------------------

COMPOSE_SPEC = yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification() -> None:
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_known_roles_with_known_settings() -> None:
    services = COMPOSE_SPEC["services"]
    roles = {name: spec for name, spec in services.items() if spec.get("command", [None])[0] == "serve"}
    assert set(roles) == {r.value for r in RoleName}
    for name, spec in roles.items():
        assert spec["command"] == ["serve", name]
        assert spec["image"] == f"genserve:{PYPROJECT['version']}"
        assert spec["build"]["dockerfile"] == "deploy/Dockerfile"
        for variable in spec["environment"]:
            assert variable in KNOWN_VARIABLES, variable
        assert spec["healthcheck"]["test"] == ["CMD", "genserve", "health", HEALTH_CHECKS[name]]
        assert ("REDIS_URL" in spec["environment"]) == (name in REDIS_ROLES), name
        if name in REDIS_ROLES:
            assert spec["environment"]["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
            assert spec["depends_on"]["redis"] == {"condition": "service_healthy"}, name
    for name, spec in services.items():
        assert spec["restart"] == "unless-stopped", name
        assert "image" in spec and ("build" in spec or "@sha256:" in spec["image"]), f"{name}: image not pinned"
    assert services["gateway"]["ports"] == [f"{PORTS.gateway_port}:{PORTS.gateway_port}"]


def test_compose_takes_keys_and_passwords_from_ignored_files_only() -> None:
    gateway = COMPOSE_SPEC["services"]["gateway"]
    assert gateway["environment"][API_KEYS_FILE] == "/run/secrets/api_keys"
    assert gateway["secrets"] == ["api_keys"]
    secret = COMPOSE_SPEC["secrets"]["api_keys"]["file"]
    for path in (secret, ".env"):
        check = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        assert check.returncode == 0, f"{path} holds secrets and must be gitignored"
    text = COMPOSE.read_text()
    assert "GENSERVE_API_KEYS:" not in text, "API keys come from the secret file, not the environment"
    assert re.search(r"requirepass \"\$\$REDIS_PASSWORD\"", text)
    assert "${GRAFANA_ADMIN_PASSWORD:?" in text


# ---- Prometheus ----------------------------------------------------------------------------------


def test_prometheus_finds_every_replica_of_every_role_by_dns() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    found = {}
    for job in config["scrape_configs"]:
        assert "static_configs" not in job, "static targets would miss scaled replicas"
        (discovery,) = job["dns_sd_configs"]
        (relabel,) = job["relabel_configs"]
        assert discovery["type"] == "A" and relabel["target_label"] == "role"
        (name,) = discovery["names"]
        assert name in COMPOSE_SPEC["services"] and relabel["replacement"] == name
        found[name] = discovery["port"]
    assert found == METRICS_PORTS


def test_prometheus_config_passes_promtool() -> None:
    result = subprocess.run(
        [promtool(), "check", "config", str(PROMETHEUS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_smoke_script_says_plainly_when_it_cannot_run() -> None:
    script = ROOT / "deploy" / "compose_smoke.py"
    docker_usable = shutil.which("docker") is not None and (
        subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    )
    if docker_usable:
        pytest.skip(f"a Docker daemon is usable here: run `python {script.relative_to(ROOT)}` (it builds the image)")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("compose smoke test not run: no") and "validated offline" in result.stdout
