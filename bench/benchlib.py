"""Helpers shared by the benchmarks (run as scripts: `python bench/NAME.py`)."""

from __future__ import annotations

import io
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import redis

from genserve.common.processes import PrivateRedis, ServerProcess
from genserve.v1 import common_pb2, jobs_pb2, vision_pb2
from genserve.vision.samples import sample_image

ROOT = Path(__file__).resolve().parents[1]


def rounded(value: object) -> object:
    """Floats to 4 decimals, recursively, for the closing JSON line."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return median(times)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def without_grpc_fork_handlers() -> None:
    """Re-run this script with gRPC's fork support off, unless it already is.

    A benchmark that starts server processes (fork + exec, with a pre-exec hook) while its own gRPC
    channels are busy otherwise sees, now and then, a child abort before it runs (SIGABRT, "epoll_wait
    error: Bad file descriptor"): gRPC's fork handlers run in the child while the fork closes its
    descriptors. The setting is read when gRPC loads, so it has to be in the environment at start.
    """
    if os.environ.get("GRPC_ENABLE_FORK_SUPPORT") != "0":
        os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.argv])


def sample_png(name: str, size: tuple[int, int]) -> bytes:
    """A bundled sample photo resized to `size` (width, height), as PNG bytes."""
    buffer = io.BytesIO()
    sample_image(name, ROOT / "var" / "packages").resize(size).save(buffer, format="PNG")
    return buffer.getvalue()


def style_job(content: bytes, style: bytes, steps: int, size: int) -> jobs_pb2.SubmitStyleTransferRequest:
    """A style-transfer job submission: one style image, `steps` L-BFGS steps, longest side `size`."""
    return jobs_pb2.SubmitStyleTransferRequest(
        request=vision_pb2.StyleTransferRequest(
            content=common_pb2.Image(data=content),
            styles=[vision_pb2.StyleImage(image=common_pb2.Image(data=style))],
            params=vision_pb2.StyleParams(iterations=steps, max_size=size),
            seed=7,
        )
    )


TERMINAL_STATES = frozenset(
    {jobs_pb2.JobState.JOB_STATE_SUCCEEDED, jobs_pb2.JobState.JOB_STATE_FAILED, jobs_pb2.JobState.JOB_STATE_CANCELLED}
)


def is_terminal(event: jobs_pb2.JobEvent) -> bool:
    return event.kind == jobs_pb2.JobEventKind.JOB_EVENT_KIND_STATE and event.state in TERMINAL_STATES


def pid_of_consumer(consumer: str) -> int:
    """A worker's consumer name is "<hostname>-<pid>-<hex>" (the hostname may hold dashes)."""
    return int(consumer.rsplit("-", 2)[1])


class JobStack:
    """A private redis-server, a gateway and job workers, all on free loopback ports.

    `stop()` (or leaving the `with` block, Ctrl-C included) ends every process it started. Logs
    and the Redis data go to a temporary folder, removed at the end unless `keep` is set.
    """

    API_KEY = "bench-key"

    def __init__(self, gateway_env: Mapping[str, str], worker_env: Mapping[str, str], keep: bool = False) -> None:
        self.gateway_env = dict(gateway_env)
        self.worker_env = dict(worker_env)
        self.keep = keep
        self.dir = Path(tempfile.mkdtemp(prefix="genserve-bench-"))
        self.redis: PrivateRedis | None = None
        self.gateway: ServerProcess | None = None
        self.workers: list[ServerProcess] = []
        self._lock = threading.Lock()

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.API_KEY}")]

    def _env(self, extra: Mapping[str, str]) -> dict[str, str]:
        assert self.redis is not None
        return {
            "GENSERVE_MODEL_STORE": str(ROOT / "model_store"),
            "REDIS_URL": self.redis.url,
            "GENSERVE_API_KEYS": f"bench:{self.API_KEY}",
            "GENSERVE_SHUTDOWN_NOTICE_SECONDS": "0",
            **extra,
        }

    def start(self) -> JobStack:
        self.redis = PrivateRedis(self.dir / "redis")
        self.redis.start()
        self.gateway = ServerProcess("gateway", self.dir / "logs", self._env(self.gateway_env))
        return self

    def start_worker(self) -> ServerProcess:
        """One more worker process, SERVING (its model loaded) when this returns."""
        worker = ServerProcess("worker", self.dir / "logs", self._env(self.worker_env))
        with self._lock:
            self.workers.append(worker)
        return worker

    def forget(self, worker: ServerProcess) -> None:
        with self._lock:
            if worker in self.workers:
                self.workers.remove(worker)

    def redis_client(self) -> redis.Redis:
        assert self.redis is not None
        return redis.Redis.from_url(self.redis.url)

    def stop(self, failed: bool = False) -> None:
        with self._lock:
            workers, self.workers = list(self.workers), []
        for worker in workers:
            worker.stop()
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if failed or self.keep:
            print(f"logs kept in {self.dir}", flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> JobStack:
        try:
            return self.start()
        except BaseException:
            self.stop(failed=True)
            raise

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self.stop(failed=kind is not None and kind is not KeyboardInterrupt)
