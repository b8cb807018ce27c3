"""`genserve client ...`: call the gateway like any application would (real gRPC)."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from genserve.v1 import common_pb2, vision_pb2

client_app = typer.Typer(help="Call a running gateway over gRPC.", no_args_is_help=True)

AddressOption = Annotated[str, typer.Option("--address", envvar="GENSERVE_GATEWAY_ADDR", help="Gateway host:port.")]
KeyOption = Annotated[
    str, typer.Option("--api-key", envvar="GENSERVE_API_KEY", help="API key (when the gateway requires one).")
]

SeedOption = Annotated[int | None, typer.Option(help="Same seed → same image.")]
PreviewEveryOption = Annotated[int, typer.Option(help="Save a preview every N steps (0 = none).")]
PreviewOption = Annotated[Path | None, typer.Option(help="Where previews go (default: OUTPUT.preview.png).")]
TimeoutOption = Annotated[float, typer.Option(help="Deadline in seconds.")]
# The style-transfer options that `client style-preview` and `jobs submit` share.
StyleOption = Annotated[list[str], typer.Option(help="Style image, PATH or PATH:WEIGHT (repeatable).")]
ContentLayerOption = Annotated[str, typer.Option(help="Content layer (default relu4_2).")]
StyleLayerOption = Annotated[list[str] | None, typer.Option(help="Style layer NAME or NAME:WEIGHT.")]
ContentWeightOption = Annotated[float | None, typer.Option(help="Content term weight (default 1).")]
StyleWeightOption = Annotated[float | None, typer.Option(help="Style term weight (default 100).")]
TvWeightOption = Annotated[float | None, typer.Option(help="Total-variation weight (default 10).")]
OptimizerOption = Annotated[str, typer.Option(help="lbfgs (default) or adam.")]
AdamRateOption = Annotated[float, typer.Option(help="Adam's learning rate (0 = default).")]
InitOption = Annotated[str, typer.Option(help="content (default), style or noise.")]
ColorOption = Annotated[str, typer.Option(help="none (default), luminance or histogram.")]
ScalesOption = Annotated[int, typer.Option(help="Coarse-to-fine scales (0/1 = one).")]


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


def _read_image(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise typer.BadParameter(f"cannot read {path}: {error.strerror}") from None


def _layer_weights(items: list[str] | None, field: str) -> list[common_pb2.LayerWeight]:
    """'name' or 'name:weight' → LayerWeight messages."""
    from genserve.v1 import common_pb2

    layers = []
    for item in items or []:
        name, _, weight = item.partition(":")
        try:
            layers.append(common_pb2.LayerWeight(layer=name, weight=float(weight) if weight else 0.0))
        except ValueError:
            raise typer.BadParameter(f"{field}: expected NAME or NAME:WEIGHT, got {item!r}") from None
    return layers


def _enum_value(enum: Any, prefix: str, choice: str, option: str) -> Any:
    """A lower-case CLI choice ("adam") → its proto enum value (STYLE_OPTIMIZER_ADAM); "" = unspecified."""
    if not choice:
        return 0
    names = [name.removeprefix(prefix).lower() for name in enum.keys() if not name.endswith("_UNSPECIFIED")]  # noqa: SIM118 (an enum wrapper, not a dict)
    if choice not in names:
        raise typer.BadParameter(f"{option} {choice!r}: choose from {', '.join(names)}")
    return enum.Value(prefix + choice.upper())


def _progress_bar() -> object:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def _save_image_stream(
    events: Iterable[Any], label: str, progress_of: Callable[[Any], tuple[int, str]], output: Path, preview: Path
) -> None:
    """Follow a Dream/StylePreview stream: a progress bar, previews to `preview`, the result to `output`."""
    with _progress_bar() as progress:  # type: ignore[attr-defined]
        task = progress.add_task(label, total=None, status="")
        for event in events:
            if event.total_steps:
                done, status = progress_of(event)
                progress.update(task, total=event.total_steps, completed=done, status=status)
            if event.HasField("preview"):
                preview.write_bytes(event.preview.data)
            if event.HasField("result"):
                output.write_bytes(event.result.data)
                typer.echo(f"wrote {output} ({event.result.width}x{event.result.height}, seed {event.seed})")


@client_app.command("dream")
def dream(
    image: Annotated[Path, typer.Argument(help="Photo to dream on (PNG, JPEG, WebP, GIF or BMP).")],
    output: Annotated[Path, typer.Argument(help="Where to write the dream (PNG).")],
    backbone: Annotated[str, typer.Option(help="efficientnet-lite0 (default) or vgg16.")] = "",
    layer: Annotated[list[str] | None, typer.Option(help="Layer to excite, NAME or NAME:WEIGHT (repeatable).")] = None,
    octaves: Annotated[int, typer.Option(help="Scales, 1..8 (0 = default).")] = 0,
    octave_scale: Annotated[float, typer.Option(help="Size ratio between octaves, (1, 2] (0 = default).")] = 0.0,
    steps: Annotated[int, typer.Option(help="Steps per octave, 1..200 (0 = default).")] = 0,
    step_size: Annotated[float, typer.Option(help="Step size, (0, 1] (0 = default).")] = 0.0,
    max_loss: Annotated[float | None, typer.Option(help="Stop an octave once the loss exceeds this.")] = None,
    jitter: Annotated[int, typer.Option(help="Random shift in pixels, 0..64.")] = 0,
    guide: Annotated[Path | None, typer.Option(help="Guide image: dream towards its features.")] = None,
    seed: SeedOption = None,
    max_size: Annotated[int, typer.Option(help="Longest side to dream at (0 = service default).")] = 0,
    preview_every: PreviewEveryOption = 0,
    preview: PreviewOption = None,
    timeout: TimeoutOption = 600.0,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """DeepDream an image through the gateway, with a progress bar."""
    from genserve.v1 import common_pb2, vision_pb2, vision_pb2_grpc

    request = vision_pb2.DreamRequest(
        image=common_pb2.Image(data=_read_image(image)),
        backbone=backbone,
        layers=_layer_weights(layer, "--layer"),
        octaves=octaves,
        octave_scale=octave_scale,
        steps_per_octave=steps,
        step_size=step_size,
        jitter=jitter,
        preview_every=preview_every,
        max_size=max_size,
    )
    if max_loss is not None:
        request.max_loss = max_loss
    if guide is not None:
        request.guide.data = _read_image(guide)
    if seed is not None:
        request.seed = seed
    with _channel(address) as channel:
        events = vision_pb2_grpc.VisionServiceStub(channel).Dream(request, timeout=timeout, metadata=_metadata(api_key))
        _save_image_stream(
            events,
            "dreaming",
            lambda e: (e.steps_done, f"octave {e.octave + 1} · loss {e.loss:.3f}"),
            output,
            preview or output.with_suffix(".preview.png"),
        )


def style_request(
    *,
    content: Path,
    style: list[str],
    content_layer: str = "",
    style_layer: list[str] | None = None,
    content_weight: float | None = None,
    style_weight: float | None = None,
    tv_weight: float | None = None,
    optimizer: str = "",
    learning_rate: float = 0.0,
    init: str = "",
    color: str = "",
    iterations: int = 0,
    max_size: int = 0,
    scales: int = 0,
    seed: int | None = None,
    preview_every: int = 0,
) -> vision_pb2.StyleTransferRequest:
    """The style options of the CLI → a StyleTransferRequest (reads the images).

    `style` items are PATH or PATH:WEIGHT; the enum options take the lower-case names ("adam",
    "noise", "luminance"; "" = unspecified); a weight left at None stays unset (the service default).
    Bad values raise typer.BadParameter.
    """
    from genserve.v1 import common_pb2, vision_pb2

    optimizer_value = _enum_value(vision_pb2.StyleOptimizer, "STYLE_OPTIMIZER_", optimizer, "--optimizer")
    init_value = _enum_value(vision_pb2.StyleInit, "STYLE_INIT_", init, "--init")
    color_value = _enum_value(vision_pb2.ColorPreservation, "COLOR_PRESERVATION_", color, "--color")
    styles = []
    for item in style:
        path, _, weight = item.rpartition(":") if ":" in item and not Path(item).exists() else (item, "", "")
        try:
            blend = float(weight or 0)
        except ValueError:
            raise typer.BadParameter(f"--style: expected PATH or PATH:WEIGHT, got {item!r}") from None
        styles.append(vision_pb2.StyleImage(image=common_pb2.Image(data=_read_image(Path(path))), weight=blend))
    request = vision_pb2.StyleTransferRequest(
        content=common_pb2.Image(data=_read_image(content)),
        styles=styles,
        params=vision_pb2.StyleParams(
            content_layer=content_layer,
            style_layers=_layer_weights(style_layer, "--style-layer"),
            content_weight=content_weight,
            style_weight=style_weight,
            tv_weight=tv_weight,
            optimizer=optimizer_value,
            learning_rate=learning_rate,
            init=init_value,
            color=color_value,
            iterations=iterations,
            max_size=max_size,
            scales=scales,
            preview_every=preview_every,
        ),
    )
    if seed is not None:
        request.seed = seed
    return request


def style_request_from(arguments: dict[str, Any]) -> vision_pb2.StyleTransferRequest:
    """`style_request` called with the matching entries of a command's arguments (its `locals()`)."""
    return style_request(**{name: arguments[name] for name in inspect.signature(style_request).parameters})


@client_app.command("style-preview")
def style_preview(
    content: Annotated[Path, typer.Argument(help="Photo whose content is kept.")],
    output: Annotated[Path, typer.Argument(help="Where to write the result (PNG).")],
    style: StyleOption,
    content_layer: ContentLayerOption = "",
    style_layer: StyleLayerOption = None,
    content_weight: ContentWeightOption = None,
    style_weight: StyleWeightOption = None,
    tv_weight: TvWeightOption = None,
    optimizer: OptimizerOption = "",
    learning_rate: AdamRateOption = 0.0,
    init: InitOption = "",
    color: ColorOption = "",
    iterations: Annotated[int, typer.Option(help="Steps (0 = the preview cap).")] = 0,
    max_size: Annotated[int, typer.Option(help="Longest side (0 = the preview cap).")] = 0,
    scales: ScalesOption = 0,
    seed: SeedOption = None,
    preview_every: PreviewEveryOption = 0,
    preview: PreviewOption = None,
    timeout: TimeoutOption = 600.0,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """A small style transfer (StylePreview) through the gateway, with a progress bar."""
    from genserve.v1 import vision_pb2_grpc

    request = style_request_from(locals())
    with _channel(address) as channel:
        events = vision_pb2_grpc.VisionServiceStub(channel).StylePreview(
            request, timeout=timeout, metadata=_metadata(api_key)
        )
        _save_image_stream(
            events,
            "stylising",
            lambda e: (e.step, f"loss {e.losses.total:.4g}"),
            output,
            preview or output.with_suffix(".preview.png"),
        )
