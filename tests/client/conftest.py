"""A whole stack for the client tests, started once: Redis, the three model services, one job
worker and a gateway with API keys, all real processes on loopback ports."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from genserve.client import Client
from genserve.common.processes import PrivateRedis
from genserve.testing import ServerProcess
from tests.conftest import TEST_TEXT_ENV, start_role
from tests.jobs.conftest import WORKER_ENV

API_KEY = "alice-key"
LATENT_MODEL = "mnist-vae-16d"
LATENT_2D = "mnist-vae-2d"  # the one model Manifold serves
# Small caps keep dreams and previews to a second or two on two shared cores.
VISION_ENV = {
    "GENSERVE_VISION_DREAM_MAX_SIZE": "64",
    "GENSERVE_VISION_PREVIEW_MAX_SIZE": "48",
    "GENSERVE_VISION_PREVIEW_MAX_STEPS": "6",
    "GENSERVE_TORCH_THREADS": "1",
}


@dataclass
class Stack:
    redis: PrivateRedis
    processes: list[ServerProcess]

    @property
    def gateway(self) -> ServerProcess:
        return self.processes[-1]

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.redis.stop()


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("client-logs")
    redis = PrivateRedis(tmp_path_factory.mktemp("client-redis"))
    redis.start()
    running = Stack(redis, [])
    keys = {"GENSERVE_API_KEYS": f"alice:{API_KEY}", "REDIS_URL": redis.url}
    try:
        text = start_role("text", logs, TEST_TEXT_ENV)
        running.processes.append(text)
        vision = start_role("vision", logs, VISION_ENV)
        running.processes.append(vision)
        latent = start_role(
            "latent", logs, {"GENSERVE_LATENT_MODELS": f"{LATENT_MODEL},{LATENT_2D}", "GENSERVE_TORCH_THREADS": "1"}
        )
        running.processes.append(latent)
        running.processes.append(start_role("worker", logs, {**keys, **WORKER_ENV}))
        addresses = {
            "GENSERVE_TEXT_ADDR": text.address,
            "GENSERVE_VISION_ADDR": vision.address,
            "GENSERVE_LATENT_ADDR": latent.address,
        }
        running.processes.append(start_role("gateway", logs, {**keys, **addresses}))
    except Exception:
        running.stop()
        raise
    yield running
    running.stop()


@pytest.fixture(scope="package")
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.gateway.address, api_key=API_KEY, timeout=60) as connected:
        yield connected


@pytest.fixture(scope="package")
def photo() -> Image.Image:
    """A 64x48 colour photo stand-in: smooth gradients with a disc, enough structure to dream on."""
    y, x = np.mgrid[0:48, 0:64]
    disc = ((x - 30) ** 2 + (y - 22) ** 2 < 150).astype(np.float64)
    red, green, blue = x / 63 * 255, y / 47 * 255, disc * 200 + 30
    return Image.fromarray(np.stack([red, green, blue], axis=-1).astype(np.uint8))


@pytest.fixture(scope="package")
def painting() -> Image.Image:
    """A 32x32 stripy 'style' image."""
    y, x = np.mgrid[0:32, 0:32]
    stripes = ((x + y) // 4 % 2).astype(np.float64)
    return Image.fromarray(np.stack([stripes * 220, 80 + stripes * 0, 255 - stripes * 200], axis=-1).astype(np.uint8))


class CuttableProxy:
    """A loopback TCP proxy in front of `target` whose open connections can be cut at will.

    Cutting resets both sides of every connection open at that moment, as a network fault or a
    gateway restart would; the proxy keeps listening, so clients can connect again.
    """

    def __init__(self, target: str, port: int = 0) -> None:
        host, target_port = target.rsplit(":", 1)
        self.target = (host, int(target_port))
        self.listener = socket.create_server(("127.0.0.1", port))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        """Reset every open connection; returns how many there were."""
        with self.lock:
            cut, self.open = self.open, []
        for end in cut:
            # shutdown (not just close) also wakes the pump blocked in recv on this socket.
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        return len(cut)

    def close(self) -> None:
        self.listener.close()
        self.cut()
