"""`genserve jobs ...`: durable style-transfer jobs (JobService) through the gateway."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from genserve.commands.client import (
    AdamRateOption,
    AddressOption,
    ColorOption,
    ContentLayerOption,
    ContentWeightOption,
    InitOption,
    KeyOption,
    OptimizerOption,
    PreviewEveryOption,
    ScalesOption,
    SeedOption,
    StyleLayerOption,
    StyleOption,
    StyleWeightOption,
    TvWeightOption,
    _progress_bar,
    checked_option,
    client_for,
    style_inputs_from,
)

if TYPE_CHECKING:
    from genserve.client import Client, Job, JobState, StyleLosses

jobs_app = typer.Typer(
    help="Long style transfers as durable jobs: submit, follow, list, cancel, fetch results.",
    no_args_is_help=True,
)

# Deadline of the unary calls; watching has none (a job may run for a long time).
RPC_TIMEOUT = 60.0

JobIdArgument = Annotated[str, typer.Argument(help="The job's id (as `submit` printed it).")]
OutputOption = Annotated[Path | None, typer.Option(help="Where the result goes (default: JOB_ID.png).")]
JobPreviewOption = Annotated[Path | None, typer.Option(help="Where previews go (default: JOB_ID.preview.png).")]
AfterOption = Annotated[str, typer.Option(help="Only events after this event id (default: all of them).")]


def _when(stamp: datetime | None) -> str:
    """A timestamp in local time; "" when unset."""
    return "" if stamp is None else stamp.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _status(state: JobState, attempt: int, losses: StyleLosses | None) -> str:
    parts = [str(state)]
    if losses is not None:
        parts.append(f"loss {losses.total:.4g}")
    if attempt > 1:
        parts.append(f"attempt {attempt}")
    return " · ".join(parts)


def _follow(client: Client, job_id: str, *, output: Path, preview: Path, after: str = "") -> None:
    """Follow the job to its end: a progress bar, previews to `preview`, the result to `output`.

    `Client.watch_job` resumes a broken stream by itself; each reconnect is shown. Exits 1 when
    the job FAILED or was CANCELLED; client errors propagate (to `client_for`).
    """
    from genserve.client import JobEventKind, JobState

    state = JobState.UNSPECIFIED
    attempt = 0
    losses: StyleLosses | None = None
    error = ""
    with _progress_bar() as progress:  # type: ignore[attr-defined]
        task = progress.add_task(job_id, total=None, status="")

        def reconnecting(reason: str, failures: int, limit: int) -> None:
            progress.console.print(f"[dim]{reason}; reconnecting ({failures}/{limit})[/]", highlight=False)

        for event in client.watch_job(job_id, after=after, on_reconnect=reconnecting):
            attempt = event.attempt or attempt
            if event.kind == JobEventKind.RESUMED:
                progress.console.print(f"resumed: attempt {event.attempt} from step {event.step}")
            if event.state and (event.kind == JobEventKind.STATE or event.state != state):
                line = str(event.state)
                if event.state == JobState.RUNNING and attempt:
                    line += f" (attempt {attempt})"
                progress.console.print(line, highlight=False)
            state = event.state or state
            error = event.error or error
            losses = event.losses or losses
            if event.total_steps:
                progress.update(task, total=event.total_steps, completed=event.step)
            progress.update(task, status=_status(state, attempt, losses))
            if event.preview is not None:
                event.preview.save(preview)
    if state != JobState.SUCCEEDED:
        typer.echo(f"error: job {job_id} {state}: {error or 'no reason given'}", err=True)
        raise typer.Exit(1)
    _write_result(client, job_id, output)


def _write_result(client: Client, job_id: str, output: Path) -> None:
    result = client.get_job_result(job_id)
    result.image.save(output)
    total = result.losses.total if result.losses else 0.0
    typer.echo(f"wrote {output} ({result.image.width}x{result.image.height}, loss {total:.4g})")


def _watch_command(client: Client, job_id: str, output: Path | None, preview: Path | None, after: str) -> None:
    try:
        _follow(
            client,
            job_id,
            output=output or Path(f"{job_id}.png"),
            preview=preview or Path(f"{job_id}.preview.png"),
            after=after,
        )
    except KeyboardInterrupt:
        typer.echo(f"\nstopped watching; the job goes on (genserve jobs watch {job_id})", err=True)
        raise typer.Exit(130) from None


@jobs_app.command("submit")
def submit(
    content: Annotated[Path, typer.Argument(help="Photo whose content is kept.")],
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
    iterations: Annotated[int, typer.Option(help="Steps (0 = the service default; capped by the job cap).")] = 0,
    max_size: Annotated[int, typer.Option(help="Longest side (0 = the service default; capped by the job cap).")] = 0,
    scales: ScalesOption = 0,
    seed: SeedOption = None,
    preview_every: PreviewEveryOption = 0,
    idempotency_key: Annotated[
        str, typer.Option(help="Submitting again with the same key returns the first job instead of a new one.")
    ] = "",
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job to its end (as `jobs watch`).")] = False,
    output: OutputOption = None,
    preview: JobPreviewOption = None,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """Queue a style transfer as a job; prints its id and state (--watch: then follow it)."""
    inputs = style_inputs_from(locals())
    with client_for(address, api_key, RPC_TIMEOUT) as client:
        job = client.submit_style_transfer(
            inputs.content, inputs.styles, idempotency_key=idempotency_key, **inputs.options
        )
        typer.echo(f"job {job.id} {job.state}")
        if watch:
            _watch_command(client, job.id, output, preview, "")


@jobs_app.command("list")
def list_jobs(
    state: Annotated[
        str, typer.Option(help="Only jobs in this state: queued, running, succeeded, failed or cancelled.")
    ] = "",
    page_size: Annotated[int, typer.Option(help="Jobs per page, 1..100 (0 = the service default, 20).")] = 0,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow the pages to the last one.")] = False,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """The caller's jobs, newest first."""
    from rich.console import Console
    from rich.table import Table

    from genserve.client.requests import job_state

    checked_option(lambda: job_state(state))
    table = Table("id", "state", "step", "total loss", "attempt", "created", "error")
    more = False
    with client_for(address, api_key, RPC_TIMEOUT) as client:
        token = ""
        while True:
            page = client.list_jobs(state=state, page_size=page_size, page_token=token)
            for job in page.jobs:
                table.add_row(
                    job.id,
                    str(job.state),
                    f"{job.step}/{job.total_steps}" if job.total_steps else "",
                    f"{job.losses.total:.4g}" if job.losses else "",
                    str(job.attempt or ""),
                    _when(job.created_at),
                    job.error,
                )
            token = page.next_page_token
            if not token or not all_pages:
                more = bool(token)
                break
    console = Console(highlight=False)
    console.print(table)
    if more:
        console.print("[dim]more jobs on the next pages: --all[/]")


@jobs_app.command("show")
def show(
    job_id: JobIdArgument,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """A job's record."""
    with client_for(address, api_key, RPC_TIMEOUT) as client:
        job = client.get_job(job_id)
    for line in _record_lines(job):
        typer.echo(line)


def _record_lines(job: Job) -> list[str]:
    rows = [
        ("id", job.id),
        ("state", str(job.state)),
        ("step", f"{job.step}/{job.total_steps}"),
        ("attempt", str(job.attempt)),
    ]
    if job.losses is not None:
        terms = job.losses
        losses = f"total {terms.total:.4g} · content {terms.content:.4g} · style {terms.style:.4g} · tv {terms.tv:.4g}"
        rows.append(("losses", losses))
    rows += [
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
        ("expires", _when(job.expires_at)),
        ("idempotency key", job.idempotency_key),
        ("error", job.error),
    ]
    width = max(len(label) for label, _ in rows)
    return [f"{label:<{width}}  {value}" for label, value in rows if value]


@jobs_app.command("watch")
def watch(
    job_id: JobIdArgument,
    output: OutputOption = None,
    preview: JobPreviewOption = None,
    after: AfterOption = "",
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """Follow a job with a progress bar; writes previews, and the result when it succeeds (exit 1 otherwise)."""
    with client_for(address, api_key, RPC_TIMEOUT) as client:
        _watch_command(client, job_id, output, preview, after)


@jobs_app.command("cancel")
def cancel(
    job_id: JobIdArgument,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """Cancel a queued or running job; prints the state it is in now."""
    with client_for(address, api_key, RPC_TIMEOUT) as client:
        job = client.cancel_job(job_id)
    typer.echo(f"job {job.id} {job.state}")


@jobs_app.command("result")
def result(
    job_id: JobIdArgument,
    output: Annotated[Path, typer.Argument(help="Where to write the result (PNG).")],
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """Fetch a succeeded job's image."""
    with client_for(address, api_key, RPC_TIMEOUT) as client:
        _write_result(client, job_id, output)
