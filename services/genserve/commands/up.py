"""`genserve up`: start the whole stack and serve until Ctrl-C."""

from __future__ import annotations

from typing import Annotated

import typer


def up(
    replicas: Annotated[
        str,
        typer.Option(
            help="Run several of a role, e.g. text=2,latent=2,worker=2; the gateway spreads calls over them.",
            show_default=False,
        ),
    ] = "",
) -> None:
    """Start Redis, the backends, the gateway and the HTTP front door; wait for health; serve until Ctrl-C."""
    from rich.console import Console
    from rich.panel import Panel

    from genserve.common.config import GatewaySettings, PortSettings, ServerSettings, StackSettings, from_env
    from genserve.common.redis_clients import redacted
    from genserve.stack import Stack, StackError, parse_replicas, run_stack

    console = Console(highlight=False)
    try:
        counts = parse_replicas(replicas)
    except StackError as error:
        console.print(f"error: {error}")
        raise typer.Exit(2) from None
    stack = Stack(
        stack=from_env(StackSettings),
        ports=from_env(PortSettings),
        server=from_env(ServerSettings),
        report=console.print,
        replicas=counts,
        gateway_tls_ca=from_env(GatewaySettings).tls_cert_file,
    )

    def announce(ready: Stack) -> None:
        gateway = f"127.0.0.1:{ready.ports.gateway_port}"
        http = f"http://127.0.0.1:{ready.ports.http_port}"
        metrics = ", ".join(f"http://127.0.0.1:{child.metrics_port}/metrics ({child.name})" for child in ready.children)
        kept = "" if ready.redis is None else f" (password in {ready.redis.data_dir}/password)"
        console.print(
            Panel.fit(
                f"[bold green]genserve is up[/]\n\n"
                f"gateway (gRPC)  {gateway}\n"
                f"HTTP (OpenAI)   {http}/v1  (API document {http}/openapi.json)\n"
                f"metrics         {metrics}\n"
                f"redis           {redacted(ready.redis_url)}{kept}\n"
                f"logs            {ready.log_dir}/\n\n"
                f"Try it from another terminal:\n"
                f'  .venv/bin/genserve client text "ROMEO:" --max-tokens 200 --address {gateway}\n'
                f'  grpcurl -plaintext -d \'{{"prompt": "JULIET:", "max_tokens": 120}}\' '
                f"{gateway} genserve.v1.TextService/GenerateStream\n"
                f"  .venv/bin/genserve client dream PHOTO.jpg dream.png --address {gateway}\n"
                f"  .venv/bin/genserve jobs submit PHOTO.jpg --style PAINTING.jpg --watch --address {gateway}\n"
                f"  curl -N {http}/v1/completions -H 'Content-Type: application/json' "
                f'-d \'{{"prompt": "ROMEO:", "max_tokens": 120, "stream": true}}\'\n\n'
                f"Ctrl-C stops everything.",
                title="genserve",
            )
        )

    raise typer.Exit(run_stack(stack, announce))
