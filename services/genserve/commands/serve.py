"""`genserve serve ROLE`: run one process of the stack (what each container runs)."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Annotated

import typer


class RoleName(StrEnum):
    gateway = "gateway"
    text = "text"
    vision = "vision"
    latent = "latent"
    worker = "worker"
    http = "http"


def serve(
    role: Annotated[RoleName, typer.Argument(help="Which process to run.")],
    grpc_port: Annotated[
        int | None,
        typer.Option(
            "--grpc-port",
            "--port",
            help="Listening port, gRPC (HTTP for the http role); default: GENSERVE_<ROLE>_PORT; 0 = any free port.",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="/metrics port (default: GENSERVE_<ROLE>_METRICS_PORT).")
    ] = None,
) -> None:
    """Serve one role until SIGTERM/SIGINT (health turns NOT_SERVING, calls drain, then exit)."""
    from genserve.common.config import (
        GatewaySettings,
        ImageSettings,
        JobSettings,
        LatentSettings,
        ModelSettings,
        PortSettings,
        ServerSettings,
        StackSettings,
        TextSettings,
        VisionSettings,
        from_env,
    )
    from genserve.common.metrics import Metrics
    from genserve.common.server import Role, configure_logging, serve_until_signalled

    server_settings = from_env(ServerSettings)
    ports = from_env(PortSettings)
    configure_logging(server_settings.log_level)
    if role is RoleName.http:
        # An HTTP server (uvicorn), not a gRPC one: it has its own start-up and shutdown.
        from genserve.common.config import HttpSettings
        from genserve.http.role import serve as serve_http

        status = serve_http(
            server_settings,
            from_env(HttpSettings),
            ports.http_port if grpc_port is None else grpc_port,
            ports.http_metrics_port if metrics_port is None else metrics_port,
        )
        if status:
            raise typer.Exit(status)
        return
    metrics = Metrics()
    redis_url = from_env(StackSettings).redis_url
    credentials = None
    instance: Role
    if role is RoleName.text:
        from genserve.text.role import TextRole

        instance = TextRole(from_env(ModelSettings), from_env(TextSettings), metrics)
        default_port, default_metrics = ports.text_port, ports.text_metrics_port
    elif role is RoleName.vision:
        from genserve.vision.role import VisionRole

        instance = VisionRole(from_env(ModelSettings), from_env(VisionSettings), from_env(ImageSettings), metrics)
        default_port, default_metrics = ports.vision_port, ports.vision_metrics_port
    elif role is RoleName.latent:
        from genserve.latent.role import LatentRole

        instance = LatentRole(
            from_env(ModelSettings), from_env(LatentSettings), from_env(ImageSettings), redis_url, metrics
        )
        default_port, default_metrics = ports.latent_port, ports.latent_metrics_port
    elif role is RoleName.worker:
        from genserve.jobs.role import WorkerRole

        instance = WorkerRole(
            from_env(ModelSettings), from_env(JobSettings), from_env(ImageSettings), redis_url, metrics
        )
        default_port, default_metrics = ports.worker_port, ports.worker_metrics_port
    else:
        from genserve.common.tls import server_credentials
        from genserve.gateway.role import GatewayRole

        gateway_settings = from_env(GatewaySettings)
        credentials = server_credentials(gateway_settings.tls_cert_file, gateway_settings.tls_key_file)
        instance = GatewayRole(
            server_settings,
            gateway_settings,
            metrics,
            from_env(JobSettings),
            from_env(ImageSettings),
            redis_url,
            from_env(ModelSettings),
        )
        default_port, default_metrics = ports.gateway_port, ports.gateway_metrics_port
    failure = asyncio.run(
        serve_until_signalled(
            instance,
            server_settings,
            default_port if grpc_port is None else grpc_port,
            metrics,
            default_metrics if metrics_port is None else metrics_port,
            credentials,
        )
    )
    if failure:
        raise typer.Exit(1)
