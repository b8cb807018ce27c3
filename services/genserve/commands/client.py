"""`genserve client ...`: call the gateway like any application would (real gRPC)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

client_app = typer.Typer(help="Call a running gateway over gRPC.", no_args_is_help=True)

AddressOption = Annotated[str, typer.Option("--address", envvar="GENSERVE_GATEWAY_ADDR", help="Gateway host:port.")]
KeyOption = Annotated[
    str, typer.Option("--api-key", envvar="GENSERVE_API_KEY", help="API key (when the gateway requires one).")
]


@contextmanager
def _channel(address: str) -> Iterator[object]:
    import grpc

    channel = grpc.insecure_channel(
        address,
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    try:
        yield channel
    except grpc.RpcError as error:
        code = error.code().name if hasattr(error, "code") else "UNKNOWN"
        details = error.details() if hasattr(error, "details") else str(error)
        typer.echo(f"error: {code}: {details}", err=True)
        raise typer.Exit(1) from None
    finally:
        channel.close()


def _metadata(api_key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {api_key}")] if api_key else []


def _unescape(text: str) -> str:
    """Shell-friendly escapes: the two characters \\n become a newline (\\t a tab)."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


@client_app.command("text")
def text(
    prompt: Annotated[str, typer.Argument(help="The conditioning text (\\n for a newline).")],
    model: Annotated[str, typer.Option(help="Model name (default: the service's default).")] = "",
    max_tokens: Annotated[int, typer.Option(help="Tokens per completion (0 = service default).")] = 0,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy; default 1.")] = None,
    temperatures: Annotated[str, typer.Option(help="Sweep, e.g. '0.2,0.5,1.0,1.2'.")] = "",
    top_k: Annotated[int, typer.Option()] = 0,
    top_p: Annotated[float | None, typer.Option()] = None,
    min_p: Annotated[float, typer.Option()] = 0.0,
    repetition_penalty: Annotated[float | None, typer.Option()] = None,
    presence_penalty: Annotated[float, typer.Option()] = 0.0,
    frequency_penalty: Annotated[float, typer.Option()] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Same seed → same text.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop sequence (repeatable; \\n for a newline).")] = None,
    n: Annotated[int, typer.Option(help="Completions per temperature.")] = 1,
    logprobs: Annotated[bool, typer.Option(help="Show each token's log-probability.")] = False,
    stream: Annotated[bool, typer.Option(help="Stream tokens as they are sampled.")] = True,
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 120.0,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """Generate text; a single completion streams to the terminal as it is sampled."""
    from genserve.v1 import text_pb2, text_pb2_grpc

    sampling = text_pb2.SamplingParams(
        top_k=top_k, min_p=min_p, presence_penalty=presence_penalty, frequency_penalty=frequency_penalty
    )
    if temperature is not None:
        sampling.temperature = temperature
    if top_p is not None:
        sampling.top_p = top_p
    if repetition_penalty is not None:
        sampling.repetition_penalty = repetition_penalty
    request = text_pb2.GenerateRequest(
        prompt=_unescape(prompt),
        model=model,
        max_tokens=max_tokens,
        sampling=sampling,
        stop=[_unescape(item) for item in stop or []],
        n=n,
        logprobs=logprobs,
        temperatures=_floats(temperatures),
    )
    if seed is not None:
        request.seed = seed
    single = n == 1 and len(request.temperatures) <= 1
    with _channel(address) as channel:
        stub = text_pb2_grpc.TextServiceStub(channel)
        if stream and single and not logprobs:
            sys.stdout.write(request.prompt)
            for message in stub.GenerateStream(request, timeout=timeout, metadata=_metadata(api_key)):
                sys.stdout.write(message.text)
                sys.stdout.flush()
            sys.stdout.write("\n")
            return
        response = stub.Generate(request, timeout=timeout, metadata=_metadata(api_key))
    _print_completions(response, request.prompt, logprobs)


def _print_completions(response: object, prompt: str, logprobs: bool) -> None:
    from rich.console import Console
    from rich.rule import Rule

    console = Console(highlight=False)
    for completion in response.completions:  # type: ignore[attr-defined]
        reason = {1: "length", 2: "stop"}.get(completion.finish_reason, "?")
        console.print(
            Rule(f"#{completion.index} · temperature {completion.temperature:g} · seed {completion.seed} · {reason}")
        )
        console.print(prompt + completion.text, markup=False)
        if logprobs:
            shown = " ".join(f"{t.text!r}:{t.logprob:.2f}" for t in completion.tokens)
            console.print(f"[dim]{shown}[/]")
    console.print(f"[dim]model {response.model} · request seed {response.seed}[/]")  # type: ignore[attr-defined]


@client_app.command("models")
def models(
    family: Annotated[str, typer.Option(help="text, vision or latent (default all).")] = "",
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """List the models the stack serves, with their metrics."""
    from rich.console import Console
    from rich.table import Table

    from genserve.v1 import models_pb2, models_pb2_grpc

    with _channel(address) as channel:
        stub = models_pb2_grpc.ModelServiceStub(channel)
        response = stub.ListModels(models_pb2.ListModelsRequest(family=family), timeout=30, metadata=_metadata(api_key))
    table = Table("name", "family", "architecture", "parameters", "device", "metrics")
    for model in response.models:
        # Quality figures only; sizes and timings are in `genserve models list`.
        quality = {k: v for k, v in model.metrics.items() if not k.endswith(("_characters", "_seconds"))}
        metrics = ", ".join(f"{k}={v:g}" for k, v in sorted(quality.items()))
        default = " (default)" if model.is_default else ""
        table.add_row(
            model.name + default,
            model.family,
            model.architecture,
            f"{model.parameter_count:,}",
            model.device,
            metrics,
        )
    Console().print(table)
