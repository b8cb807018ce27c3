"""A real TorchServe on free loopback ports, for tests and benchmarks of genserve's archives.

    with TorchServe(model_store, workdir) as server:   # starts it; stops it, and every process of it
        server.register("shakespeare-lstm.mar", batch_size=8, max_batch_delay_ms=20)
        channel = grpc.insecure_channel(server.inference_address)   # calls carry server.metadata()

Everything of one instance is in `workdir`: its `config.properties`, the frontend's output
(`torchserve.log`), TorchServe's own logs (`logs/`), `key_file.json` (token authorisation, on
by default as in TorchServe) and a `tmp/` folder. All five ports (HTTP inference, management and
metrics, gRPC inference and management) are free ports bound on 127.0.0.1.

How it is started, and why:
- The Java frontend is started directly, as this process's own child, with the command line
  `torchserve --start --foreground` would build (TorchServe 0.12.0, its last release, so that
  command is fixed). Not through `torchserve --start`: that launcher keeps a pid file,
  `.model_server.pid`, in tempfile.gettempdir() and refuses to start (or stops the wrong server)
  when another instance holds it, and it would leave the frontend a grandchild that outlives a
  killed parent. As a direct child the frontend is bound to die with this process (SIGTERM
  from the kernel, genserve.common.processes.spawn) and its process group is ours to end.
- `java.io.tmpdir` (and TMPDIR/TEMP for the workers) is a folder per instance: the frontend
  talks to its Python workers over Unix sockets named `<java.io.tmpdir>/.ts.sock.<9000+n>`,
  so two instances sharing /tmp would take each other's sockets.
- The workers run this interpreter, sys.executable (`--python`): the one that imports genserve
  and this module, so the archives' handler finds genserve. Without `--python` TorchServe would
  use the Python of whatever ran its launcher.
- `env` reaches the frontend and, through it, the workers (TorchServe copies its environment to
  each worker), e.g. GENSERVE_TORCH_THREADS or OMP_NUM_THREADS.
- config.properties: `--ncs` (no snapshot: a run starts from this file alone),
  install_py_dep_per_model=false, enable_model_api=true (off by default since TorchServe 0.11.1:
  without it RegisterModel is refused, "Model API disabled"), default_workers_per_model=1 (only used for models given at
  start; `register` sets its own count), disable_system_metrics=true (no metrics collector
  process started every minute beside the workers; it would add CPU use and RSS that are not
  serving), plus any `properties` given.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import grpc
from google.protobuf import empty_pb2

from genserve.common.processes import free_ports, spawn, stop_process, tail
from genserve.tsapi import inference_pb2_grpc, management_pb2, management_pb2_grpc

if TYPE_CHECKING:
    import psutil

JAVA_MIN_MAJOR = 17
INSTALL_JAVA = "apt-get install openjdk-17-jre-headless"
# sockaddr_un.sun_path holds 108 bytes: the workers' socket paths must fit.
_SOCKET_PATH_MAX = 100


class TorchServeError(RuntimeError):
    """TorchServe did not start, or refused a management call; the message says why."""


def java_command() -> str | None:
    """The java TorchServe's own launcher would run: $JAVA_HOME/bin/java, else `java` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        return str(candidate) if candidate.exists() else None
    return shutil.which("java")


def java_major(java: str) -> int | None:
    """The major version `java -version` reports (8 for "1.8.0_x"), or None if it can't be read."""
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def java_missing_reason() -> str | None:
    """None when TorchServe can run here (its package importable, Java 17+); else why not."""
    if importlib.util.find_spec("ts") is None:
        return f"the torchserve package is not installed in {sys.executable} (make torchserve)"
    java = java_command()
    if java is None:
        where = "in $JAVA_HOME/bin" if os.environ.get("JAVA_HOME") else "on PATH"
        return f"no java {where}: TorchServe needs Java {JAVA_MIN_MAJOR} ({INSTALL_JAVA})"
    major = java_major(java)
    if major is None:
        return f"{java} -version did not say its version: TorchServe needs Java {JAVA_MIN_MAJOR} ({INSTALL_JAVA})"
    if major < JAVA_MIN_MAJOR:
        return f"{java} is Java {major}: TorchServe needs Java {JAVA_MIN_MAJOR} or later ({INSTALL_JAVA})"
    return None


class TorchServe:
    """One TorchServe (frontend and Python workers) on free loopback ports; see the module docstring.

    `start()` returns once gRPC Ping answers; `stop()` (or leaving the `with` block) ends the
    frontend and every process under it, and is safe to call twice. `properties` are extra
    config.properties lines (e.g. {"job_queue_size": "1000"}).
    """

    def __init__(
        self,
        model_store: Path,
        workdir: Path,
        *,
        token_auth: bool = True,
        env: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        self.model_store = Path(model_store).resolve()
        self.workdir = Path(workdir).resolve()
        self.token_auth = token_auth
        self.env = dict(env or {})
        self.properties = dict(properties or {})
        http, management, metrics, grpc_inference, grpc_management = free_ports(5)
        self.http_address = f"127.0.0.1:{http}"
        self.http_management_address = f"127.0.0.1:{management}"
        self.metrics_address = f"127.0.0.1:{metrics}"
        self.inference_address = f"127.0.0.1:{grpc_inference}"
        self.management_address = f"127.0.0.1:{grpc_management}"
        self.log_path = self.workdir / "torchserve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._keys: dict[str, str] = {}
        self._tmp: Path | None = None
        self._own_tmp = False

    # --- starting -----------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.properties"

    @property
    def logs_dir(self) -> Path:
        """TorchServe's own logs: ts_log.log, model_log.log (the workers' output), access_log.log."""
        return self.workdir / "logs"

    def _config(self) -> str:
        def host_port(address: str) -> tuple[str, str]:
            host, port = address.rsplit(":", 1)
            return host, port

        grpc_inference_host, grpc_inference_port = host_port(self.inference_address)
        grpc_management_host, grpc_management_port = host_port(self.management_address)
        properties = {
            "inference_address": f"http://{self.http_address}",
            "management_address": f"http://{self.http_management_address}",
            "metrics_address": f"http://{self.metrics_address}",
            "grpc_inference_address": grpc_inference_host,
            "grpc_inference_port": grpc_inference_port,
            "grpc_management_address": grpc_management_host,
            "grpc_management_port": grpc_management_port,
            "model_store": str(self.model_store),
            "default_workers_per_model": "1",
            "install_py_dep_per_model": "false",
            "disable_system_metrics": "true",
            # Registering through the management API is off by default since TorchServe 0.11.1.
            "enable_model_api": "true",
            **self.properties,
        }
        lines = [f"{key}={value}" for key, value in properties.items()]
        return "# written by genserve.torchserve.launcher\n" + "\n".join(lines) + "\n"

    def _tmp_dir(self) -> Path:
        """A folder of this instance's own for java.io.tmpdir: under workdir when the workers'
        socket paths fit there, else a short one under the system's temporary folder."""
        inside = self.workdir / "tmp"
        if len(str(inside / ".ts.sock.65535")) <= _SOCKET_PATH_MAX:
            inside.mkdir(parents=True, exist_ok=True)
            return inside
        self._own_tmp = True
        return Path(tempfile.mkdtemp(prefix="genserve-ts-"))

    def command(self, tmp: Path) -> list[str]:
        """The frontend's command line, as TorchServe 0.12.0's `torchserve --start` builds it."""
        java = java_command()
        if java is None:
            raise TorchServeError(java_missing_reason() or "no java")
        spec = importlib.util.find_spec("ts")
        if spec is None or spec.origin is None:
            raise TorchServeError(java_missing_reason() or "the torchserve package is not installed")
        ts_home = Path(spec.origin).resolve().parents[1]  # site-packages, as the launcher's model_server_home
        command = [
            java,
            f"-Dmodel_server_home={ts_home}",
            f"-Djava.io.tmpdir={tmp}",
            "-cp", f".:{ts_home / 'ts' / 'frontend' / '*'}",
            "org.pytorch.serve.ModelServer",
            "--python", sys.executable,
            "-f", str(self.config_path),
            "-s", str(self.model_store),
            "-ncs",
        ]  # fmt: skip
        if not self.token_auth:
            command.append("--disable-token-auth")
        return command

    def start(self, timeout: float = 180.0) -> None:
        """Start the frontend and return once gRPC Ping answers (with the inference key when
        `token_auth`); raises TorchServeError with the log's tail if it exits or times out."""
        if self.process is not None:
            raise TorchServeError("this TorchServe is started already")
        reason = java_missing_reason()
        if reason is not None:
            raise TorchServeError(f"TorchServe cannot run here: {reason}")
        if not self.model_store.is_dir():
            raise TorchServeError(f"the model store {self.model_store} is not a folder")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        self.config_path.write_text(self._config(), encoding="utf-8")
        key_file = self.workdir / "key_file.json"
        key_file.unlink(missing_ok=True)  # a previous run's keys are not this run's
        self._keys = {}
        self._tmp = self._tmp_dir()
        tmp = str(self._tmp)
        env = {
            **os.environ,
            **self.env,
            "TMPDIR": tmp,
            "TEMP": tmp,
            "LOG_LOCATION": str(self.logs_dir),
            "METRICS_LOCATION": str(self.logs_dir),
        }
        self.process = spawn(self.command(self._tmp), self.log_path, env, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        try:
            with grpc.insecure_channel(self.inference_address) as channel:
                ping = inference_pb2_grpc.InferenceAPIsServiceStub(channel).Ping
                last = "no answer"
                while True:
                    if self.process.poll() is not None:
                        raise TorchServeError(
                            f"TorchServe exited with code {self.process.returncode} while starting; "
                            f"last lines of {self.log_path}:\n{tail(self.log_path, 30)}"
                        )
                    if self.token_auth and not self._keys:
                        self._keys = self._read_keys(key_file)
                    if self._keys or not self.token_auth:
                        try:
                            ping(empty_pb2.Empty(), metadata=self.metadata(), timeout=2.0)
                            return
                        except grpc.RpcError as error:
                            last = f"{error.code().name}: {error.details()}"
                    if time.monotonic() > deadline:
                        raise TorchServeError(
                            f"TorchServe did not answer Ping on {self.inference_address} within {timeout:.0f} s "
                            f"(last answer: {last}); last lines of {self.log_path}:\n{tail(self.log_path, 30)}"
                        )
                    time.sleep(0.2)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _read_keys(key_file: Path) -> dict[str, str]:
        """{"inference": KEY, "management": KEY} from key_file.json, or {} while it is not whole yet."""
        try:
            described = json.loads(key_file.read_text(encoding="utf-8"))
            return {kind: str(described[kind]["key"]) for kind in ("inference", "management")}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    # --- tokens -------------------------------------------------------------------------------

    @property
    def inference_token(self) -> str | None:
        return self._keys.get("inference")

    @property
    def management_token(self) -> str | None:
        return self._keys.get("management")

    def metadata(self) -> list[tuple[str, str]]:
        """Call metadata for the inference API: the inference key, or nothing without token auth."""
        return [("authorization", f"Bearer {self.inference_token}")] if self.inference_token else []

    def management_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.management_token}")] if self.management_token else []

    # --- models -------------------------------------------------------------------------------

    def _management(self, call: str, request: object, timeout: float) -> str:
        """One management call; its reply's message, or TorchServeError with TorchServe's."""
        if self.process is None:
            raise TorchServeError("TorchServe is not started")
        with grpc.insecure_channel(self.management_address) as channel:
            stub = management_pb2_grpc.ManagementAPIsServiceStub(channel)
            try:
                reply = getattr(stub, call)(request, metadata=self.management_metadata(), timeout=timeout)
            except grpc.RpcError as error:
                raise TorchServeError(
                    f"TorchServe {call}: {error.code().name}: {error.details()}; last lines of "
                    f"{self.logs_dir / 'model_log.log'}:\n{tail(self.logs_dir / 'model_log.log', 20)}"
                ) from None
        return str(reply.msg)

    def register(
        self,
        archive: str,
        *,
        batch_size: int = 1,
        max_batch_delay_ms: int = 100,
        workers: int = 1,
        timeout: float = 180.0,
    ) -> None:
        """Register `archive` (a .mar file name in the model store, or a URL) with `workers`
        workers and return once they are ready (synchronous registration)."""
        request = management_pb2.RegisterModelRequest(
            url=archive,
            batch_size=batch_size,
            max_batch_delay=max_batch_delay_ms,
            initial_workers=workers,
            synchronous=True,
            startup_timeout=max(1, int(timeout)),
        )
        self._management("RegisterModel", request, timeout)

    def describe(self, model_name: str, timeout: float = 30.0) -> list[dict[str, object]]:
        """TorchServe's description of a model (one object per version: workers with pids, batch size...)."""
        reply = self._management("DescribeModel", management_pb2.DescribeModelRequest(model_name=model_name), timeout)
        described = json.loads(reply)
        return described if isinstance(described, list) else [described]

    def unregister(self, model_name: str, timeout: float = 60.0) -> None:
        """Unregister the model and wait until its worker processes have exited."""
        deadline = time.monotonic() + timeout
        worker_pids = [
            int(worker["pid"])
            for version in self.describe(model_name, timeout)
            for worker in version.get("workers", []) or []  # type: ignore[attr-defined]
            if isinstance(worker, dict) and worker.get("pid")
        ]
        self._management("UnregisterModel", management_pb2.UnregisterModelRequest(model_name=model_name), timeout)
        while any(_alive(pid) for pid in worker_pids):
            if time.monotonic() > deadline:
                raise TorchServeError(f"the workers of {model_name} ({worker_pids}) still run {timeout:.0f} s on")
            time.sleep(0.05)

    # --- processes ----------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The frontend's pid and those of all its descendants (the Python workers); [] once stopped."""
        if self.process is None or self.process.poll() is not None:
            return []
        return [self.process.pid, *(child.pid for child in self._descendants())]

    def _descendants(self) -> list[psutil.Process]:
        import psutil  # a dependency of torchserve

        if self.process is None:
            return []
        try:
            return list(psutil.Process(self.process.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM to the frontend (it stops its workers), SIGKILL to whatever of its process
        tree is left after `timeout` seconds; returns once none of it runs. Idempotent."""
        process = self.process
        if process is not None:
            import psutil

            # Process objects, not pids: psutil will not signal a pid that a new process has taken.
            tree = self._descendants()
            stop_process(process, timeout)
            # Workers the frontend did not end, and any it started since the snapshot: they are in
            # its process group (spawn() made the frontend a session leader; workers don't leave it).
            left = [*tree, *_group_members(process.pid)]
            for child in left:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            psutil.wait_procs(left, timeout=10)
            self.process = None
        if self._tmp is not None and self._own_tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    def __enter__(self) -> TorchServe:
        if self.process is None:
            self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _group_members(group: int) -> list[psutil.Process]:
    """The live processes of process group `group`."""
    import psutil

    members = []
    for candidate in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(candidate.pid) == group and candidate.status() != psutil.STATUS_ZOMBIE:
                members.append(candidate)
    return members


def _alive(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
