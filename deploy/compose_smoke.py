"""Bring the docker-compose stack up, call every family through the gateway, tear it down.

    python deploy/compose_smoke.py            # from the repository root, with the project's venv

Needs a usable Docker daemon with the compose plugin; where there is none it says so and exits 3
(the compose file is still validated offline by tests/deploy/test_container.py). It creates
`secrets/api_keys` and `.env` with random values when they are missing (both are gitignored),
builds the image, waits for every health check, then: one text completion, one DeepDream, two
latent samples, the model listing, and a small style-transfer job watched to the end.
`docker compose down --volumes` runs whatever happened.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from genserve.client import Client, JobState

ROOT = Path(__file__).resolve().parents[1]
NO_DAEMON = 3
UP_TIMEOUT_SECONDS = 1800  # the first build downloads torch and the weight packages


def docker_problem() -> str | None:
    """Why the compose stack cannot run here, or None."""
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return "no `docker` command"
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["docker info failed"])[-1]
        return f"no usable Docker daemon ({reason})"
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    return None if plugin.returncode == 0 else "no `docker compose` plugin"


def ensure_secrets() -> str:
    """The first API key, after writing secrets/api_keys and .env where they are missing."""
    keys = ROOT / "secrets" / "api_keys"
    if not keys.exists():
        keys.parent.mkdir(exist_ok=True)
        keys.write_text(f"smoke:{secrets.token_hex(24)}\n")
        keys.chmod(0o644)  # read by the container's non-root user
    env = ROOT / ".env"
    if not env.exists():
        env.write_text(f"REDIS_PASSWORD={secrets.token_hex(24)}\nGRAFANA_ADMIN_PASSWORD={secrets.token_hex(24)}\n")
    first = next(line for line in keys.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return first.partition(":")[2] or first


def compose(*arguments: str, timeout: float = 600) -> None:
    subprocess.run(["docker", "compose", *arguments], cwd=ROOT, check=True, timeout=timeout)


def exercise(api_key: str) -> None:
    photo = Image.new("RGB", (96, 64), (180, 120, 60))
    painting = Image.new("RGB", (48, 48), (30, 60, 200))
    with Client("127.0.0.1:50051", api_key=api_key, timeout=300) as client:
        models = client.list_models()
        print(f"models: {', '.join(sorted(model.name for model in models))}")
        text = client.generate("ROMEO:", max_tokens=40, seed=1).completions[0].text
        print(f"text: {text!r}")
        dream = client.dream(photo, seed=1)
        print(f"dream: {dream.width}x{dream.height}, {len(dream.png)} bytes of PNG")
        sample = client.sample(2, seed=1)
        print(f"latent: {len(sample.images)} samples")
        job = client.submit_style_transfer(photo, painting, iterations=20, max_size=64, seed=1)
        started = time.monotonic()
        for event in client.watch_job(job.id):
            if event.terminal:
                break
        record = client.get_job(job.id)
        if record.state != JobState.SUCCEEDED:
            raise RuntimeError(f"style job {job.id} ended {record.state}")
        print(f"job: {job.id} SUCCEEDED in {time.monotonic() - started:.1f}s")


def main() -> int:
    problem = docker_problem()
    if problem is not None:
        print(f"compose smoke test not run: {problem}. The compose file is validated offline by `make test`.")
        return NO_DAEMON
    api_key = ensure_secrets()
    try:
        compose("up", "--detach", "--build", "--wait", timeout=UP_TIMEOUT_SECONDS)
        exercise(api_key)
    finally:
        compose("down", "--volumes")
    print("compose smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
