"""`genserve up`: start the whole stack and serve until Ctrl-C."""

from __future__ import annotations

import typer


def up() -> None:
    """Start Redis, the backends and the gateway; wait for health; serve until Ctrl-C."""
    from rich.console import Console
    from rich.panel import Panel

    from genserve.common.config import PortSettings, ServerSettings, StackSettings, from_env
    from genserve.stack import Stack, run_stack

    console = Console(highlight=False)
    stack = Stack(
        stack=from_env(StackSettings),
        ports=from_env(PortSettings),
        server=from_env(ServerSettings),
        report=console.print,
    )

    def announce(ready: Stack) -> None:
        gateway = f"127.0.0.1:{ready.ports.gateway_port}"
        console.print(
            Panel.fit(
                f"[bold green]genserve is up[/]\n\n"
                f"gateway (gRPC)  {gateway}\n"
                f"metrics         http://127.0.0.1:{ready.ports.gateway_metrics_port}/metrics (gateway), "
                f"http://127.0.0.1:{ready.ports.text_metrics_port}/metrics (text), "
                f"http://127.0.0.1:{ready.ports.vision_metrics_port}/metrics (vision), "
                f"http://127.0.0.1:{ready.ports.latent_metrics_port}/metrics (latent), "
                f"http://127.0.0.1:{ready.ports.worker_metrics_port}/metrics (worker)\n"
                f"redis           {ready.redis_url}\n"
                f"logs            {ready.log_dir}/\n\n"
                f"Try it from another terminal:\n"
                f'  .venv/bin/genserve client text "ROMEO:" --max-tokens 200 --address {gateway}\n'
                f'  grpcurl -plaintext -d \'{{"prompt": "JULIET:", "max_tokens": 120}}\' '
                f"{gateway} genserve.v1.TextService/GenerateStream\n"
                f"  .venv/bin/genserve client dream PHOTO.jpg dream.png --address {gateway}\n"
                f"  .venv/bin/genserve jobs submit PHOTO.jpg --style PAINTING.jpg --watch --address {gateway}\n\n"
                f"Ctrl-C stops everything.",
                title="genserve",
            )
        )

    raise typer.Exit(run_stack(stack, announce))
