"""`genserve client ...`: call the gateway like any application would (real gRPC)."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from genserve.client import Client, DreamProgress, Generation, ModelInfo, StyleProgress
    from genserve.client.requests import StyleOptions
    from genserve.v1 import vision_pb2

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
def client_for(address: str, api_key: str, timeout: float | None = 60.0) -> Iterator[Client]:
    """A `genserve.client.Client` whose failures print `error: CODE: message` and exit 1."""
    from genserve.client import Client, GenserveClientError

    try:
        with Client(address, api_key=api_key, timeout=timeout) as client:
            yield client
    except GenserveClientError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def checked_option(check: Callable[[], Any]) -> Any:
    """Run a client-side check of option values; its InvalidArgument ("optimizer 'sgd': choose
    from ...") becomes a usage error naming the option (--optimizer), before any call."""
    from genserve.client import InvalidArgument

    try:
        return check()
    except InvalidArgument as error:
        raise typer.BadParameter(f"--{error.message}") from None


def given(**options: Any) -> Any:
    """The options a command was given: those left None are not sent, so the service's defaults apply."""
    return {name: value for name, value in options.items() if value is not None}


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
    from genserve.client.requests import GenerateOptions

    text_prompt = _unescape(prompt)
    sweep = _floats(temperatures)
    options: GenerateOptions = {
        "model": model,
        "max_tokens": max_tokens,
        "top_k": top_k,
        "min_p": min_p,
        "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty,
        "stop": [_unescape(item) for item in stop or []],
        "n": n,
        "logprobs": logprobs,
        "temperatures": sweep,
    }
    options.update(given(temperature=temperature, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed))
    single = n == 1 and len(sweep) <= 1
    with client_for(address, api_key, timeout) as client:
        if stream and single and not logprobs:
            sys.stdout.write(text_prompt)
            for piece in client.generate_stream(text_prompt, **options):
                sys.stdout.write(piece.text)
                sys.stdout.flush()
            sys.stdout.write("\n")
            return
        generation = client.generate(text_prompt, **options)
    _print_completions(generation, text_prompt, logprobs)


def _print_completions(generation: Generation, prompt: str, logprobs: bool) -> None:
    from rich.console import Console
    from rich.rule import Rule

    console = Console(highlight=False)
    for completion in generation.completions:
        reason = completion.finish_reason or "?"
        console.print(
            Rule(f"#{completion.index} · temperature {completion.temperature:g} · seed {completion.seed} · {reason}")
        )
        console.print(prompt + completion.text, markup=False)
        if logprobs:
            shown = " ".join(f"{t.text!r}:{t.logprob:.2f}" for t in completion.tokens)
            console.print(f"[dim]{shown}[/]")
    console.print(f"[dim]model {generation.model} · request seed {generation.seed}[/]")


@client_app.command("models")
def models(
    family: Annotated[str, typer.Option(help="text, vision or latent (default all).")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Every field of every model, as JSON.")] = False,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """List the models the stack serves, each with its headline metric (--json: everything)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    with client_for(address, api_key, 30) as client:
        listed = client.list_models(family)
    if as_json:
        import dataclasses
        import json

        typer.echo(json.dumps([dataclasses.asdict(model) for model in listed], indent=2))
        return
    # Narrow on purpose (fits 80 columns): the architecture, metrics and details are in --json.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, caption="* default of its family · all fields: --json")
    table.add_column("name", no_wrap=True)
    table.add_column("family", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("device", no_wrap=True)
    table.add_column("headline metric", no_wrap=True)
    for model in listed:
        table.add_row(
            model.name + (" *" if model.is_default else ""),
            model.family,
            _millions(model.parameter_count),
            model.device,
            headline_metric(model),
        )
    Console().print(table)


def _millions(count: int) -> str:
    return f"{count / 1e6:.1f} M" if count >= 100_000 else f"{count:,}"


def headline_metric(model: ModelInfo) -> str:
    """The one figure that says how good a model is, by family; "" when the store has none.

    Text: held-out loss in nats per character (lower is better). Latent generators: the
    inception score of their samples under the data set's classifier (higher is better; VAE and
    GAN alike, so they compare); classifiers: test accuracy. Vision backbones are used as
    published and carry no metric.
    """
    metrics = model.metrics
    if "val_loss_nats_per_char" in metrics:
        return f"val loss {metrics['val_loss_nats_per_char']:.3f} nats/char"
    if "inception_score" in metrics:
        return f"inception score {metrics['inception_score']:.2f}"
    if "test_accuracy" in metrics:
        return f"test accuracy {metrics['test_accuracy']:.1%}"
    return ""


def _read_image(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise typer.BadParameter(f"cannot read {path}: {error.strerror}") from None


def _layer_weights(items: list[str] | None, field: str) -> list[tuple[str, float]]:
    """'name' or 'name:weight' → (name, weight); weight 0 = the service default (1)."""
    layers = []
    for item in items or []:
        name, _, weight = item.partition(":")
        try:
            layers.append((name, float(weight) if weight else 0.0))
        except ValueError:
            raise typer.BadParameter(f"{field}: expected NAME or NAME:WEIGHT, got {item!r}") from None
    return layers


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
    events: Iterable[DreamProgress] | Iterable[StyleProgress],
    label: str,
    progress_of: Callable[[Any], tuple[int, str]],
    output: Path,
    preview: Path,
) -> None:
    """Follow a dream/style-preview's progress: a progress bar, previews to `preview`, the result to `output`."""
    with _progress_bar() as progress:  # type: ignore[attr-defined]
        task = progress.add_task(label, total=None, status="")
        for event in events:
            if event.total_steps:
                done, status = progress_of(event)
                progress.update(task, total=event.total_steps, completed=done, status=status)
            if event.preview is not None:
                event.preview.save(preview)
            if event.result is not None:
                event.result.save(output)
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
    from genserve.client.requests import DreamOptions

    photo = _read_image(image)
    options: DreamOptions = {
        "backbone": backbone,
        "layers": _layer_weights(layer, "--layer"),
        "octaves": octaves,
        "octave_scale": octave_scale,
        "steps_per_octave": steps,
        "step_size": step_size,
        "jitter": jitter,
        "preview_every": preview_every,
        "max_size": max_size,
    }
    options.update(given(max_loss=max_loss, guide=_read_image(guide) if guide else None, seed=seed))
    with client_for(address, api_key, timeout) as client:
        _save_image_stream(
            client.dream_stream(photo, **options),
            "dreaming",
            lambda e: (e.steps_done, f"octave {e.octave + 1} · loss {e.loss:.3f}"),
            output,
            preview or output.with_suffix(".preview.png"),
        )


@dataclass(frozen=True)
class StyleInputs:
    """A style transfer as the CLI options describe it, in the client library's terms."""

    content: bytes
    styles: list[tuple[bytes, float]]
    options: StyleOptions


def style_inputs(
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
) -> StyleInputs:
    """The style options of the CLI → content, weighted styles and options (reads the images).

    `style` items are PATH or PATH:WEIGHT; the enum options take the lower-case names ("adam",
    "noise", "luminance"; "" = unspecified); a weight left at None stays unset (the service default).
    Bad values raise typer.BadParameter.
    """
    from genserve.client import requests

    styles = []
    for item in style:
        path, _, weight = item.rpartition(":") if ":" in item and not Path(item).exists() else (item, "", "")
        try:
            blend = float(weight or 0)
        except ValueError:
            raise typer.BadParameter(f"--style: expected PATH or PATH:WEIGHT, got {item!r}") from None
        styles.append((_read_image(Path(path)), blend))
    options: requests.StyleOptions = {
        "content_layer": content_layer,
        "style_layers": _layer_weights(style_layer, "--style-layer"),
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        "init": init,
        "color": color,
        "iterations": iterations,
        "max_size": max_size,
        "scales": scales,
        "preview_every": preview_every,
    }
    options.update(given(content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight, seed=seed))
    inputs = StyleInputs(_read_image(content), styles, options)
    checked_option(lambda: requests.style_transfer_request(inputs.content, inputs.styles, inputs.options))
    return inputs


@functools.wraps(style_inputs, assigned=())  # same parameters (and signature) as style_inputs
def style_request(**arguments: Any) -> vision_pb2.StyleTransferRequest:
    """`style_inputs` as the StyleTransferRequest the client sends."""
    from genserve.client import requests

    inputs = style_inputs(**arguments)
    return requests.style_transfer_request(inputs.content, inputs.styles, inputs.options)


def style_inputs_from(arguments: dict[str, Any]) -> StyleInputs:
    """`style_inputs` called with the matching entries of a command's arguments (its `locals()`)."""
    return style_inputs(**{name: arguments[name] for name in inspect.signature(style_inputs).parameters})


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
    inputs = style_inputs_from(locals())
    with client_for(address, api_key, timeout) as client:
        _save_image_stream(
            client.style_preview_stream(inputs.content, inputs.styles, **inputs.options),
            "stylising",
            lambda e: (e.step, f"loss {e.losses.total:.4g}" if e.losses else ""),
            output,
            preview or output.with_suffix(".preview.png"),
        )
