"""The server bootstrap shared by every gRPC process.

One grpc.aio server with the error/metrics interceptor, standard health checking and server
reflection, a Prometheus /metrics port, deliberate message-size limits, and a lifecycle where
health means ready: services report NOT_SERVING until `Role.start()` (model loading) is done,
and again as soon as SIGTERM/SIGINT arrives, while in-flight calls drain.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from genserve.common.config import ServerSettings
from genserve.common.interceptors import ServerInterceptor
from genserve.common.metrics import Metrics
from genserve.common.processes import StartError

log = logging.getLogger(__name__)


class Role(Protocol):
    """What a process serves. `start` may take long (loading models); health waits for it."""

    name: str
    failure: str | None  # set when the role stopped itself because something broke

    def service_names(self) -> list[str]:
        """Full names of the gRPC services this role registers."""
        ...

    def add_to_server(self, server: grpc.aio.Server) -> None: ...

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """Role-specific interceptors, inside the shared error/metrics one."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class RunningServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    role: Role
    settings: ServerSettings

    async def mark(self, status: int) -> None:
        await self.health.set("", status)
        for name in self.role.service_names():
            await self.health.set(name, status)

    async def shutdown(self) -> None:
        """Graceful stop: NOT_SERVING first, drain in-flight calls, then release the role."""
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.settings.shutdown_notice_seconds)
        await self.server.stop(self.settings.shutdown_grace_seconds)
        await self.role.stop()


# gRPC core holds calls that arrive faster than the application takes them, and beyond 1,000
# waiting it starts to drop them at random (all beyond 3,000) with a bare CANCELLED that no
# interceptor sees or counts. A burst of a few thousand calls is normal for a gateway, and each
# role has its own limits that answer RESOURCE_EXHAUSTED with a message, so core's threshold is
# moved far past them: every call reaches the application, is answered and is counted.
PENDING_CALLS_SOFT_LIMIT = 50_000
PENDING_CALLS_HARD_LIMIT = 100_000
SERVER_OPTIONS = [
    ("grpc.server.max_pending_requests", PENDING_CALLS_SOFT_LIMIT),
    ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS_HARD_LIMIT),
    ("grpc.so_reuseport", 0),
]


def channel_options(settings: ServerSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
    ]


async def start_server(
    role: Role,
    settings: ServerSettings,
    port: int,
    metrics: Metrics,
    metrics_port: int | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> RunningServer:
    """Bind, start serving (health NOT_SERVING), run `role.start()`, then report SERVING.

    port 0 binds a free port (tests); the bound port is in the result. With `credentials` the
    port speaks TLS.
    """
    server = grpc.aio.server(
        # The error/metrics interceptor is outermost, so it also maps what inner ones raise.
        interceptors=[ServerInterceptor(metrics), *role.interceptors()],
        options=[*channel_options(settings), *SERVER_OPTIONS],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    role.add_to_server(server)
    names = role.service_names()
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    for name in names:
        metrics.init_service(name, _methods_of(name))
    try:
        listen = f"{settings.host}:{port}"
        bound = server.add_insecure_port(listen) if credentials is None else server.add_secure_port(listen, credentials)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise StartError(f"{role.name}: could not listen on {settings.host}:{port} (is the port in use?)")
    running = RunningServer(server, health_servicer, bound, role, settings)
    await running.mark(health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    if metrics_port is not None:
        try:
            metrics.serve_http(settings.host, metrics_port)
        except OSError as error:
            await server.stop(None)
            raise StartError(
                f"{role.name}: could not serve /metrics on {settings.host}:{metrics_port}: {error}"
            ) from None
    log.info("%s: gRPC%s on %s:%d, loading", role.name, "" if credentials is None else " (TLS)", settings.host, bound)
    try:
        await role.start()
    except BaseException:
        await server.stop(None)
        raise
    await running.mark(health_pb2.HealthCheckResponse.SERVING)
    log.info("%s: SERVING on %s:%d", role.name, settings.host, bound)
    return running


def _methods_of(full_service_name: str) -> list[str]:
    from google.protobuf import descriptor_pool

    try:
        descriptor = descriptor_pool.Default().FindServiceByName(full_service_name)
    except KeyError:
        return []
    return [m.name for m in descriptor.methods]


async def serve_until_signalled(
    role: Role,
    settings: ServerSettings,
    port: int,
    metrics: Metrics,
    metrics_port: int | None,
    credentials: grpc.ServerCredentials | None = None,
) -> str | None:
    """Run `role` until SIGTERM or SIGINT, then shut down gracefully; returns its failure, if any."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start_server(role, settings, port, metrics, metrics_port, credentials)
    await stop.wait()
    log.info("%s: stopping (grace %.0fs)", role.name, settings.shutdown_grace_seconds)
    await running.shutdown()
    log.info("%s: stopped", role.name)
    return role.failure


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
