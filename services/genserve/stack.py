"""`genserve up`: the whole stack on one machine, as child processes of one command.

Order: a private Redis (unless REDIS_URL is set), the backends, the gateway, then the HTTP front
door (a client of the gateway); each must report SERVING on standard gRPC health (the http role:
200 on GET /healthz) before the next step. Ctrl-C or SIGTERM stops the children in reverse order
(the front doors first, so no call reaches a backend that is going away).
A child that dies while serving is started again, after 1, 2, 4 … seconds (at most 30), with its
log tail on screen; one that keeps crashing (more than 5 times within a minute) stops the stack.
`--replicas text=2,worker=3` runs several of a role, each on its role's ports plus 10, 20 …, and
the gateway spreads calls over a model service's replicas as it would over a cluster's pods.
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
    free_port_outside,
    port_is_free,
    spawn,
    stop_process,
    tail,
    wait_http_ready,
    wait_serving,
)
from genserve.common.redis_clients import redacted
from genserve.common.tls import channel_credentials


class StackError(RuntimeError):
    """The stack could not start; the message says why and what to do."""


SCALABLE_ROLES = ("text", "vision", "latent", "worker")
MAX_REPLICAS = 8
REPLICA_PORT_STEP = 10  # replica k (from 0) listens on its role's ports + 10·k


def parse_replicas(spec: str) -> dict[str, int]:
    """'text=2,worker=3' → {'text': 2, 'worker': 3}; roles left out run once."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        role, sep, count = item.partition("=")
        role = role.strip()
        if not sep or role not in SCALABLE_ROLES or not count.strip().isdigit():
            raise StackError(
                f"--replicas: {item!r} is not ROLE=COUNT with ROLE one of {', '.join(SCALABLE_ROLES)} "
                "(one gateway fronts them all)"
            )
        if not 1 <= int(count) <= MAX_REPLICAS:
            raise StackError(f"--replicas: {role}={count} is outside 1..{MAX_REPLICAS}")
        counts[role] = int(count)
    return counts


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
    name: str  # the role, with -2, -3 … for its further replicas
    role: str
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
            sys.executable, "-m", "genserve.cli", "serve", self.role,
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
    replicas: dict[str, int] = field(default_factory=dict)
    # With TLS on the gateway, its health is checked trusting its own certificate (self-signed, for 127.0.0.1).
    gateway_tls_ca: str = ""
    children: list[Child] = field(default_factory=list)
    redis: PrivateRedis | None = None
    redis_url: str = ""

    @property
    def log_dir(self) -> Path:
        return self.stack.var_dir / "logs"

    def plan(self) -> list[tuple[str, str, int, int]]:
        """(name, role, port, metrics port) of every child, in start order: backends, workers, gateway, http.

        The port is gRPC for every role but http, which serves HTTP (one of it: it is a client of the
        one gateway)."""
        ports = self.ports
        bases = {
            "text": (ports.text_port, ports.text_metrics_port),
            "vision": (ports.vision_port, ports.vision_metrics_port),
            "latent": (ports.latent_port, ports.latent_metrics_port),
            "worker": (ports.worker_port, ports.worker_metrics_port),
        }
        planned = []
        for role, (port, metrics_port) in bases.items():
            for k in range(self.replicas.get(role, 1)):
                step = REPLICA_PORT_STEP * k
                planned.append((role if k == 0 else f"{role}-{k + 1}", role, port + step, metrics_port + step))
        planned.append(("gateway", "gateway", ports.gateway_port, ports.gateway_metrics_port))
        planned.append(("http", "http", ports.http_port, ports.http_metrics_port))
        return planned

    def _check_ports(self) -> None:
        wanted = {}
        for name, role, port, metrics_port in self.plan():
            variable = f"GENSERVE_{role.upper()}_PORT"
            offset = "" if name == role else f"+{port - getattr(self.ports, f'{role}_port')}"
            wanted[f"{port} ({variable}{offset}, {name})"] = port
            wanted[f"{metrics_port} ({variable.replace('_PORT', '_METRICS_PORT')}{offset}, {name})"] = metrics_port
        if len(set(wanted.values())) < len(wanted):
            raise StackError(
                f"two processes would share a port ({', '.join(wanted)}): replicas take their role's ports "
                f"plus {REPLICA_PORT_STEP}, {2 * REPLICA_PORT_STEP} …; set GENSERVE_*_PORT further apart"
            )
        busy = [label for label, port in wanted.items() if not port_is_free(port, self.server.host)]
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
                raise StackError(f"REDIS_URL={redacted(self.stack.redis_url)} does not answer: {error}") from None
            self.redis_url = self.stack.redis_url
            self.report(f"redis    external {redacted(self.redis_url)}")
            return
        # Its port is picked now, while the children's are still free: it must not take one of theirs.
        planned = {port for _, _, grpc_port, metrics_port in self.plan() for port in (grpc_port, metrics_port)}
        self.redis = PrivateRedis(self.stack.var_dir / "redis", port=free_port_outside(planned, self.server.host))
        self.redis_url = self.redis.start()
        self.report(f"redis    {redacted(self.redis_url)} (AOF and password file under {self.redis.data_dir})")

    def _child_env(self) -> dict[str, str]:
        def addresses(role: str) -> str:
            return ",".join(f"127.0.0.1:{port}" for _, planned, port, _ in self.plan() if planned == role)

        env = dict(os.environ)
        env.update(
            {
                "REDIS_URL": self.redis_url,
                "GENSERVE_TEXT_ADDR": addresses("text"),
                "GENSERVE_VISION_ADDR": addresses("vision"),
                "GENSERVE_LATENT_ADDR": addresses("latent"),
                "GENSERVE_HTTP_GATEWAY_ADDR": f"127.0.0.1:{self.ports.gateway_port}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.gateway_tls_ca:
            # The http role reaches a TLS gateway trusting the same (self-signed) certificate.
            env.setdefault("GENSERVE_HTTP_GATEWAY_TLS_CA", self.gateway_tls_ca)
        # Locally nobody load-balances over these processes: Ctrl-C should not wait for one.
        env.setdefault("GENSERVE_SHUTDOWN_NOTICE_SECONDS", "0")
        return env

    def start(self) -> None:
        self._check_ports()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._start_redis()
        deadline = time.monotonic() + self.stack.start_timeout_seconds
        for name, role, port, metrics_port in self.plan():
            started = time.monotonic()
            child = Child(name, role, port, metrics_port, self._child_env(), self.log_dir / f"{name}.log")
            child.process = spawn(child.command, child.log_path, child.env)
            self.children.append(child)
            tls = channel_credentials(self.gateway_tls_ca) if role == "gateway" and self.gateway_tls_ca else None
            try:
                if role == "http":
                    url = f"http://{child.address}/healthz"
                    wait_http_ready(url, child.process, child.log_path, deadline - time.monotonic(), name)
                else:
                    wait_serving(child.address, child.process, child.log_path, deadline - time.monotonic(), name, tls)
            except StartError as error:
                hint = " With TLS the certificate must be valid for 127.0.0.1 and self-signed." if tls else ""
                raise StackError(f"{error} (GENSERVE_START_TIMEOUT_SECONDS bounds the wait.{hint})") from None
            self.report(
                f"{name:<8} SERVING on {'http://' if role == 'http' else ''}{child.address} "
                f"in {time.monotonic() - started:.1f}s "
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
