"""Helpers shared by the benchmarks (run as scripts: `python bench/NAME.py`)."""

from __future__ import annotations

import io
import math
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from genserve.testing import ServerProcess
from genserve.v1 import common_pb2, jobs_pb2, vision_pb2
from genserve.vision.samples import sample_image

ROOT = Path(__file__).resolve().parents[1]
MODEL_STORE = ROOT / "model_store"
LOG_DIR = ROOT / "var" / "bench"  # the servers' logs
# No shutdown notice: nothing routes to a benchmark's servers but the benchmark, so they stop at once.
QUIET = {"GENSERVE_LOG_LEVEL": "WARNING", "GENSERVE_SHUTDOWN_NOTICE_SECONDS": "0"}
# The one caller of the job benchmarks' stacks (genserve.testing.JobStack): its key is in `stack.metadata`.
API_KEYS = {"bench": "bench-key"}
KIND = jobs_pb2.JobEventKind
STATE = jobs_pb2.JobState
RPC_TIMEOUT = 30.0  # seconds for each call the job benchmarks make


def serve(role: str, env: dict[str, str], timeout: float = 120) -> ServerProcess:
    """`genserve serve ROLE` on free loopback ports, quiet, its log in LOG_DIR; SERVING on return."""
    return ServerProcess(role, LOG_DIR, {**QUIET, **env}, timeout=timeout)


def text_service(model: str, env: dict[str, str] | None = None, timeout: float = 120) -> ServerProcess:
    """A text service that serves `model` alone from the committed store."""
    store = {"GENSERVE_MODEL_STORE": str(MODEL_STORE), "GENSERVE_TEXT_MODELS": model}
    return serve("text", {**store, **(env or {})}, timeout)


def rounded(value: object) -> object:
    """Floats to 4 decimals, recursively (in dicts and lists), for the closing JSON line."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def median_interval(values: list[float], confidence: float = 0.95, resamples: int = 4000) -> tuple[float, float]:
    """A bootstrap confidence interval of the median of `values` (percentile method, fixed seed):
    how far a median of this many noisy runs could be from the true one."""
    draw = random.Random(0)
    medians = sorted(median(draw.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - confidence) / 2
    return medians[int(tail * (resamples - 1))], medians[int((1 - tail) * (resamples - 1))]


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
