"""`genserve up`: the whole stack on one machine, as child processes of one command.

Order: a private Redis (unless REDIS_URL is set), the backends, then the gateway; each must
report SERVING on standard gRPC health before the next step. Ctrl-C or SIGTERM stops the
children in reverse order (gateway first, so no call reaches a backend that is going away).
A child that dies while serving is started again, after 1, 2, 4 … seconds (at most 30), with its
log tail on screen; one that keeps crashing (more than 5 times within a minute) stops the stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from genserve.common.config import PortSettings, ServerSettings, StackSettings
from genserve.common.processes import (
    PrivateRedis,
    StartError,
    port_is_free,
    spawn,
    stop_process,
    tail,
    wait_serving,
)


class StackError(RuntimeError):
    """The stack could not start; the message says why and what to do."""


@dataclass
class RestartPolicy:
    """When a crashed child starts again: after first_delay, doubling with each crash that follows
    within `window` seconds, at most max_delay; after more than max_crashes crashes within the
    window it is not started again (None): something is wrong that a restart will not mend."""

    max_crashes: int = 5
    window_seconds: float = 60.0
    first_delay: float = 1.0
    max_delay: float = 30.0
    crashes: deque[float] = field(default_factory=deque)  # monotonic times of the recent crashes

    def delay_after_crash(self, now: float) -> float | None:
        self.crashes.append(now)
        while now - self.crashes[0] > self.window_seconds:
            self.crashes.popleft()
        if len(self.crashes) > self.max_crashes:
            return None
        return min(self.max_delay, self.first_delay * 2 ** (len(self.crashes) - 1))


@dataclass
class Child:
    name: str
    port: int
    metrics_port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    restart_at: float | None = None  # set while a crashed child waits for its restart

    @property
    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "genserve.cli", "serve", self.name,
            "--grpc-port", str(self.port), "--metrics-port", str(self.metrics_port),
        ]  # fmt: skip

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Stack:
    stack: StackSettings
    ports: PortSettings
    server: ServerSettings
    report: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    redis: PrivateRedis | None = None
    redis_url: str = ""

    @property
    def log_dir(self) -> Path:
        return self.stack.var_dir / "logs"

    def _check_ports(self) -> None:
        wanted = {
            "GENSERVE_GATEWAY_PORT": self.ports.gateway_port,
            "GENSERVE_GATEWAY_METRICS_PORT": self.ports.gateway_metrics_port,
            "GENSERVE_TEXT_PORT": self.ports.text_port,
            "GENSERVE_TEXT_METRICS_PORT": self.ports.text_metrics_port,
            "GENSERVE_VISION_PORT": self.ports.vision_port,
            "GENSERVE_VISION_METRICS_PORT": self.ports.vision_metrics_port,
            "GENSERVE_LATENT_PORT": self.ports.latent_port,
            "GENSERVE_LATENT_METRICS_PORT": self.ports.latent_metrics_port,
            "GENSERVE_WORKER_PORT": self.ports.worker_port,
            "GENSERVE_WORKER_METRICS_PORT": self.ports.worker_metrics_port,
        }
        busy = [f"{port} ({env})" for env, port in wanted.items() if not port_is_free(port, self.server.host)]
        if busy:
            raise StackError(
                f"ports already in use: {', '.join(busy)}. Stop what uses them (another `genserve up`?) "
                "or set those variables to free ports."
            )

    def _start_redis(self) -> None:
        if self.stack.redis_url:
            try:
                redis.Redis.from_url(self.stack.redis_url).ping()
            except redis.RedisError as error:
                raise StackError(f"REDIS_URL={self.stack.redis_url} does not answer: {error}") from None
            self.redis_url = self.stack.redis_url
            self.report(f"redis    external {self.redis_url}")
            return
        self.redis = PrivateRedis(self.stack.var_dir / "redis")
        self.redis_url = self.redis.start()
        self.report(f"redis    {self.redis_url} (AOF under {self.redis.data_dir})")

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "REDIS_URL": self.redis_url,
                "GENSERVE_TEXT_ADDR": f"127.0.0.1:{self.ports.text_port}",
                "GENSERVE_VISION_ADDR": f"127.0.0.1:{self.ports.vision_port}",
                "GENSERVE_LATENT_ADDR": f"127.0.0.1:{self.ports.latent_port}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        # Locally nobody load-balances over these processes: Ctrl-C should not wait for one.
        env.setdefault("GENSERVE_SHUTDOWN_NOTICE_SECONDS", "0")
        return env

    def _launch(self, name: str, port: int, metrics_port: int) -> Child:
        child = Child(name, port, metrics_port, self._child_env(), self.log_dir / f"{name}.log")
        child.process = spawn(child.command, child.log_path, child.env)
        self.children.append(child)
        return child

    def start(self) -> None:
        self._check_ports()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._start_redis()
        deadline = time.monotonic() + self.stack.start_timeout_seconds
        for name, port, metrics_port in (
            ("text", self.ports.text_port, self.ports.text_metrics_port),
            ("vision", self.ports.vision_port, self.ports.vision_metrics_port),
            ("latent", self.ports.latent_port, self.ports.latent_metrics_port),
            ("worker", self.ports.worker_port, self.ports.worker_metrics_port),
            ("gateway", self.ports.gateway_port, self.ports.gateway_metrics_port),
        ):
            started = time.monotonic()
            child = self._launch(name, port, metrics_port)
            assert child.process is not None
            try:
                wait_serving(child.address, child.process, child.log_path, deadline - time.monotonic(), name)
            except StartError as error:
                raise StackError(f"{error} (GENSERVE_START_TIMEOUT_SECONDS bounds the wait)") from None
            self.report(
                f"{name:<8} SERVING on {child.address} in {time.monotonic() - started:.1f}s "
                f"· metrics http://127.0.0.1:{metrics_port}/metrics · log {child.log_path}"
            )

    def watch(self, stop: threading.Event) -> Child | None:
        """Supervise until `stop` is set (→ None) or a child keeps crashing (→ that child).

        A child that exits is started again after its policy's delay, with the same ports and
        settings; what its log said last is shown first.
        """
        while not stop.wait(0.2):
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        child.restart_at = None
                        child.process = spawn(child.command, child.log_path, child.env)
                        self.report(f"{child.name:<8} started again (pid {child.process.pid})")
                    continue
                if child.process is None or child.process.poll() is None:
                    continue
                delay = child.policy.delay_after_crash(now)
                if delay is None:
                    return child
                child.restart_at = now + delay
                self.report(
                    f"{child.name:<8} exited unexpectedly with code {child.process.returncode}; restarting in "
                    f"{delay:.0f}s; last lines of {child.log_path}:\n{tail(child.log_path, 10)}"
                )
        return None

    def shutdown(self) -> None:
        grace = self.server.shutdown_notice_seconds + self.server.shutdown_grace_seconds + 5
        for child in reversed(self.children):
            if child.process is not None:
                code = stop_process(child.process, grace)
                self.report(f"{child.name:<8} stopped (exit {code})")
        self.children.clear()
        if self.redis is not None:
            self.redis.stop()
            self.report("redis    stopped")
            self.redis = None


def run_stack(stack: Stack, on_ready: Callable[[Stack], None]) -> int:
    """Start, announce, serve until SIGINT/SIGTERM or a child's death; always stop cleanly."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            stack.start()
        except StackError as error:
            stack.report(f"error: {error}")
            return 1
        on_ready(stack)
        died = stack.watch(stop)
        if died is not None:
            assert died.process is not None
            policy = died.policy
            stack.report(
                f"error: {died.name} keeps crashing ({len(policy.crashes)} exits within "
                f"{policy.window_seconds:.0f}s, the last with code {died.process.returncode}); stopping the stack. "
                f"Last lines of {died.log_path}:\n{tail(died.log_path)}"
            )
            return 1
        stack.report("stopping…")
        return 0
    finally:
        stack.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
