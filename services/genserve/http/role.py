"""`genserve serve http`: the FastAPI application on uvicorn, /metrics on its own port.

uvicorn owns the process's signals: SIGTERM or SIGINT stops accepting connections, lets open
requests and streams finish for GENSERVE_SHUTDOWN_GRACE_SECONDS, then cancels what is left
(which cancels the gRPC calls behind them) and closes the gateway channel.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
import uvicorn

from genserve.client import AsyncClient
from genserve.common.balancing import BALANCING_OPTIONS, channel_target
from genserve.common.config import HttpSettings, ServerSettings
from genserve.common.metrics import HttpMetrics
from genserve.common.tls import read_pem
from genserve.http.app import create_app

log = logging.getLogger(__name__)


def serve(server: ServerSettings, settings: HttpSettings, port: int, metrics_port: int) -> int:
    """Serve until signalled; the exit status (1 when a port could not be bound)."""
    metrics = HttpMetrics()
    credentials = None
    if settings.gateway_tls_ca:
        ca = read_pem(settings.gateway_tls_ca, "GENSERVE_HTTP_GATEWAY_TLS_CA")
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)

    def make_client() -> AsyncClient:
        # GENSERVE_HTTP_GATEWAY_ADDR may name several gateways (a list, or a DNS name of a headless
        # Service): calls are spread round_robin over the SERVING ones, as the gateway spreads its own.
        return AsyncClient(
            channel_target(settings.gateway_addr),
            timeout=settings.default_timeout_seconds,
            credentials=credentials,
            server_name=settings.gateway_server_name,
            channel_options=BALANCING_OPTIONS,
        )

    app = create_app(settings, metrics, make_client)
    try:
        metrics.serve_http(server.host, metrics_port)
    except OSError as error:
        log.error("http: could not serve /metrics on %s:%d: %s", server.host, metrics_port, error)
        return 1
    config = uvicorn.Config(
        app,
        host=server.host,
        port=port,
        # grpc.aio runs on the standard asyncio loop.
        loop="asyncio",
        lifespan="on",
        log_level=server.log_level.lower(),
        # Every request is counted in the metrics; a line per request would only fill the log.
        access_log=False,
        timeout_graceful_shutdown=int(server.shutdown_grace_seconds),
    )
    instance = uvicorn.Server(config)
    # uvicorn handles SIGTERM/SIGINT during serve() (graceful shutdown), then puts back the handlers
    # it found and raises the signal again, so that the default handler would end the process by
    # that signal (exit -15). The shutdown was already clean: handlers that ignore the repeat make
    # the exit status 0, like every other role's.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: None)
    log.info("http: serving on http://%s:%d, calling the gateway at %s", server.host, port, settings.gateway_addr)
    asyncio.run(instance.serve())
    return 0 if instance.started else 1
