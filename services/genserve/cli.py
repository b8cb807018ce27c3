"""The `genserve` command: serve roles, run the whole stack, train models, call the gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genserve.commands.client import client_app
from genserve.commands.export import export_app
from genserve.commands.jobs import jobs_app
from genserve.commands.latent_client import register as register_latent_client
from genserve.commands.models import models_app
from genserve.commands.serve import serve
from genserve.commands.train import train_app
from genserve.commands.up import up

app = typer.Typer(
    help="genserve: model-serving microservices for generative deep learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(up)
app.command()(serve)
app.add_typer(train_app, name="train")
app.add_typer(models_app, name="models")
register_latent_client(client_app)
app.add_typer(client_app, name="client")
app.add_typer(jobs_app, name="jobs")
app.add_typer(export_app, name="export")


@app.command()
def config(
    markdown: Annotated[
        Path | None,
        typer.Option(help="Rewrite the table between this Markdown file's config-table markers, not print it."),
    ] = None,
) -> None:
    """Print every environment variable the processes read, as docs/configuration.md's table."""
    from genserve.common.config import markdown_table

    if markdown is None:
        typer.echo(markdown_table())
        return
    text = markdown.read_text(encoding="utf-8")
    start, end = "<!-- config-table", "<!-- /config-table -->"
    head, _, rest = text.partition(start)
    if end not in rest:
        raise typer.BadParameter(f"{markdown} has no {start} ... {end} block")
    _, _, tail = rest.partition(end)
    marker = rest.split("\n", 1)[0]
    markdown.write_text(f"{head}{start}{marker}\n{markdown_table()}\n{end}{tail}", encoding="utf-8")


@app.command()
def health(
    address: str = typer.Argument(
        "127.0.0.1:50051", help="host:port of any gRPC genserve process, or the http role's http://HOST:PORT/healthz."
    ),
    service: str = typer.Option("", help="Service name; empty = the whole server."),
    timeout: float = typer.Option(3.0, help="Seconds to wait for the answer."),
    tls_ca: str = typer.Option("", help="PEM CA (or self-signed certificate) to trust: the port speaks TLS."),
    tls_server_name: str = typer.Option("", help="Name to check in the certificate (when ADDRESS is an IP)."),
) -> None:
    """Exit 0 when the server reports SERVING (for container health checks)."""
    if address.startswith(("http://", "https://")):
        _http_health(address, timeout)
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from genserve.common.tls import channel_credentials, open_channel

    credentials = channel_credentials(tls_ca) if tls_ca else None
    with open_channel(address, credentials, tls_server_name) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            typer.echo(f"{address}: {error.code().name}: {error.details()}", err=True)
            raise typer.Exit(1) from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    typer.echo(f"{address}: {status}")
    raise typer.Exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)


def _http_health(url: str, timeout: float) -> None:
    """The http role's readiness: exit 0 when `url` answers 200 (its /healthz: the gateway is SERVING)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            typer.echo(f"{url}: {response.status} {response.read(500).decode(errors='replace')}")
            raise typer.Exit(0)
    except urllib.error.HTTPError as error:
        typer.echo(f"{url}: {error.code} {error.read(500).decode(errors='replace')}", err=True)
    except OSError as error:
        typer.echo(f"{url}: {error}", err=True)
    raise typer.Exit(1)


def main() -> None:
    """Entry point: known failures print one line, not a traceback."""
    import sys

    from genserve.common.config import ConfigError
    from genserve.common.errors import GenserveError
    from genserve.common.model_store import ModelStoreError
    from genserve.common.packages import PackageFetchError
    from genserve.common.processes import RedisNotFound, StartError

    try:
        app()
    except (ConfigError, GenserveError, ModelStoreError, PackageFetchError, RedisNotFound, StartError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
