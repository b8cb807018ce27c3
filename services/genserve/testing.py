"""Start genserve roles as real processes on free loopback ports, for tests and benchmarks of code that uses genserve.

`ServerProcess` is one `genserve serve ROLE` child, returned once it reports SERVING (its model
loaded); `JobStack` is the job system whole: a private redis-server, a gateway and job workers.
Every process is bound to die with the process that started it, and each logs to a file whose
tail is in the error when it fails to start. Nothing here is used by genserve's own roles.

    with JobStack(Path("model_store"), {"me": "my-key"}) as stack:
        stack.start_worker()
        channel = grpc.insecure_channel(stack.gateway.address)  # calls carry stack.metadata
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import grpc
import redis

from genserve.common.processes import (
    PrivateRedis,
    StartError,
    free_ports,
    spawn,
    stop_process,
    wait_http_ready,
    wait_serving,
)


class ServerProcess:
    """One `genserve serve ROLE` child on two free ports (gRPC and metrics), SERVING once constructed.

    The http role listens for HTTP instead (its base URL is `url`) and is ready once its /healthz
    answers 200, which needs the gateway it calls (GENSERVE_HTTP_GATEWAY_ADDR in `env`) SERVING.

        `env` is added to this process's environment (settings such as GENSERVE_MODEL_STORE and
        REDIS_URL); the child's output goes to `log_dir/ROLE-PORT.log`. Raises StartError (with the
        log's tail) when the child exits or is not SERVING within `timeout` seconds. A gateway that
        serves TLS (GENSERVE_TLS_CERT_FILE in `env`) is checked with `credentials`.
    """

    def __init__(
        self,
        role: str,
        log_dir: Path,
        env: Mapping[str, str],
        timeout: float = 120,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.role = role
        self.port, self.metrics_port = free_ports(2)
        self.log_path = log_dir / f"{role}-{self.port}.log"
        command = [
            sys.executable, "-m", "genserve.cli", "serve", role,
            "--grpc-port", str(self.port), "--metrics-port", str(self.metrics_port),
        ]  # fmt: skip
        self.process = spawn(command, self.log_path, {**os.environ, "PYTHONUNBUFFERED": "1", **env})
        try:
            if role == "http":
                wait_http_ready(f"{self.url}/healthz", self.process, self.log_path, timeout, role)
            else:
                wait_serving(self.address, self.process, self.log_path, timeout, role, credentials)
        except StartError:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL of an http role."""
        return f"http://{self.address}"

    def metrics(self) -> str:
        """The Prometheus text exposition of the child's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM (graceful shutdown), SIGKILL after `timeout` seconds; returns the exit code."""
        return stop_process(self.process, timeout)


class JobStack:
    """A private redis-server (append-only), a gateway and job workers, all on free loopback ports.

    `api_keys` maps principal → API key (GENSERVE_API_KEYS); `gateway_env` and `worker_env` are
    settings for those roles on top of what every role of the stack gets (`env`). Logs go to
    `work_dir/logs` and the Redis data to `work_dir/redis`. Without a `work_dir` the stack makes a
    temporary one and removes it at `stop()`, unless `keep` is set or the run failed (its path is
    printed then). `stop()`, or leaving the `with` block (Ctrl-C included), ends every process
    it started. Workers may be started and forgotten from several threads at once.
    """

    def __init__(
        self,
        model_store: Path,
        api_keys: Mapping[str, str],
        gateway_env: Mapping[str, str] | None = None,
        worker_env: Mapping[str, str] | None = None,
        work_dir: Path | None = None,
        keep: bool = False,
    ) -> None:
        if not api_keys:
            raise ValueError("api_keys must name at least one principal and its key")
        self.model_store = model_store
        self.api_keys = dict(api_keys)
        self.gateway_env = dict(gateway_env or {})
        self.worker_env = dict(worker_env or {})
        self._owns_dir = work_dir is None
        self.dir = work_dir if work_dir is not None else Path(tempfile.mkdtemp(prefix="genserve-jobs-"))
        self.keep = keep
        self.redis: PrivateRedis | None = None
        self.gateway: ServerProcess | None = None
        self.workers: list[ServerProcess] = []
        self._lock = threading.Lock()

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def metadata(self) -> list[tuple[str, str]]:
        """Call metadata with the first principal's API key, for callers that act as one principal."""
        key = next(iter(self.api_keys.values()))
        return [("authorization", f"Bearer {key}")]

    @property
    def env(self) -> dict[str, str]:
        """The settings every role of this stack gets: model store, Redis, API keys, no shutdown notice."""
        if self.redis is None:
            raise RuntimeError("the stack is not started")
        return {
            "GENSERVE_MODEL_STORE": str(self.model_store),
            "REDIS_URL": self.redis.url,
            "GENSERVE_API_KEYS": ",".join(f"{principal}:{key}" for principal, key in self.api_keys.items()),
            "GENSERVE_SHUTDOWN_NOTICE_SECONDS": "0",
        }

    def start(self) -> JobStack:
        """Redis, then the gateway (SERVING when this returns); no workers yet."""
        self.redis = PrivateRedis(self.dir / "redis")
        self.redis.start()
        self.gateway = ServerProcess("gateway", self.log_dir, {**self.env, **self.gateway_env})
        return self

    def start_worker(self, **settings: str) -> ServerProcess:
        """One more worker process, SERVING (its model loaded) when this returns; `settings` are
        environment variables for this worker only."""
        worker = ServerProcess("worker", self.log_dir, {**self.env, **self.worker_env, **settings})
        with self._lock:
            self.workers.append(worker)
        return worker

    def forget(self, worker: ServerProcess) -> None:
        """Stop tracking `worker` (one that was killed, or that the caller stops itself)."""
        with self._lock:
            if worker in self.workers:
                self.workers.remove(worker)

    def stop_workers(self) -> None:
        with self._lock:
            workers, self.workers = list(self.workers), []
        for worker in workers:
            worker.stop()

    def redis_client(self) -> redis.Redis:
        """A new client of the stack's Redis; the caller closes it."""
        if self.redis is None:
            raise RuntimeError("the stack is not started")
        return redis.Redis.from_url(self.redis.url)

    def stop(self, failed: bool = False) -> None:
        """End every process; remove a temporary work folder unless `keep` or `failed`."""
        self.stop_workers()
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if failed or self.keep:
            print(f"logs kept in {self.dir}", flush=True)
        elif self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> JobStack:
        try:
            return self.start()
        except BaseException:
            self.stop(failed=True)
            raise

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self.stop(failed=kind is not None and kind is not KeyboardInterrupt)
