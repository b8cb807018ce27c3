"""`genserve jobs ...`: durable style-transfer jobs (JobService) through the gateway."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    _channel,
    _enum_value,
    _metadata,
    _progress_bar,
    style_request_from,
)

if TYPE_CHECKING:
    from genserve.v1 import jobs_pb2_grpc

jobs_app = typer.Typer(
    help="Long style transfers as durable jobs: submit, follow, list, cancel, fetch results.",
    no_args_is_help=True,
)

# Deadline of the unary calls; WatchJob streams have none (a job may run for a long time).
RPC_TIMEOUT = 60.0
# A broken watch stream (UNAVAILABLE) is resumed up to RECONNECTS times in a row, after pauses of
# RECONNECT_DELAY, twice that, ... seconds, each followed by up to READY_WAIT seconds for the channel.
RECONNECTS = 5
RECONNECT_DELAY = 0.5
READY_WAIT = 5.0

JobIdArgument = Annotated[str, typer.Argument(help="The job's id (as `submit` printed it).")]
OutputOption = Annotated[Path | None, typer.Option(help="Where the result goes (default: JOB_ID.png).")]
JobPreviewOption = Annotated[Path | None, typer.Option(help="Where previews go (default: JOB_ID.preview.png).")]
AfterOption = Annotated[str, typer.Option(help="Only events after this event id (default: all of them).")]


def _state_name(state: int) -> str:
    """JOB_STATE_RUNNING → "running"."""
    from genserve.v1 import jobs_pb2

    try:
        return jobs_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()  # type: ignore[arg-type]
    except ValueError:
        return str(state)


def _terminal(state: int) -> bool:
    from genserve.v1 import jobs_pb2

    return state in (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED)


def _when(message: Any, field: str) -> str:
    """A Timestamp field in local time; "" when unset."""
    from datetime import UTC

    if not message.HasField(field):
        return ""
    stamp = getattr(message, field).ToDatetime(tzinfo=UTC).astimezone()
    return str(stamp.strftime("%Y-%m-%d %H:%M:%S"))


def _stub(channel: object) -> jobs_pb2_grpc.JobServiceStub:
    from genserve.v1 import jobs_pb2_grpc

    return jobs_pb2_grpc.JobServiceStub(channel)  # type: ignore[arg-type]


def _wait_for(channel: object, delay: float) -> None:
    """Back off before resuming a watch: `delay` seconds, then until the channel is ready (bounded)."""
    import grpc

    time.sleep(delay)
    # Not ready in time: try anyway; the call fails with UNAVAILABLE again and counts as one more attempt.
    with contextlib.suppress(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=READY_WAIT)


def _status(state: int, attempt: int, losses: Any | None) -> str:
    parts = [_state_name(state)]
    if losses is not None:
        parts.append(f"loss {losses.total:.4g}")
    if attempt > 1:
        parts.append(f"attempt {attempt}")
    return " · ".join(parts)


def _follow(
    stub: Any,
    job_id: str,
    *,
    api_key: str,
    output: Path,
    preview: Path,
    after: str = "",
    wait: Callable[[float], None] = time.sleep,
) -> None:
    """Follow WatchJob to the job's end: a progress bar, previews to `preview`, the result to `output`.

    A stream that breaks with UNAVAILABLE is reopened after the last event received (up to
    RECONNECTS times in a row, `wait`ing between tries), so no event is missed. Exits 1 when the
    job FAILED or was CANCELLED; other gRPC errors propagate (to `_channel`).
    """
    import grpc

    from genserve.v1 import jobs_pb2

    last_event = after
    state = jobs_pb2.JOB_STATE_UNSPECIFIED
    attempt = 0
    losses: Any | None = None
    error = ""
    failures = 0
    with _progress_bar() as progress:  # type: ignore[attr-defined]
        task = progress.add_task(job_id, total=None, status="")

        def retry(reason: str) -> None:
            nonlocal failures
            failures += 1
            progress.console.print(f"[dim]{reason}; reconnecting ({failures}/{RECONNECTS})[/]", highlight=False)
            wait(RECONNECT_DELAY * 2 ** (failures - 1))

        while not _terminal(state):
            events = stub.WatchJob(
                jobs_pb2.WatchJobRequest(id=job_id, after_event_id=last_event), metadata=_metadata(api_key)
            )
            try:
                for event in events:
                    failures = 0
                    last_event = event.event_id or last_event
                    attempt = event.attempt or attempt
                    if event.kind == jobs_pb2.JOB_EVENT_KIND_RESUMED:
                        progress.console.print(f"resumed: attempt {event.attempt} from step {event.step}")
                    if event.state and (event.kind == jobs_pb2.JOB_EVENT_KIND_STATE or event.state != state):
                        line = _state_name(event.state)
                        if event.state == jobs_pb2.JOB_STATE_RUNNING and attempt:
                            line += f" (attempt {attempt})"
                        progress.console.print(line, highlight=False)
                    state = event.state or state
                    error = event.error or error
                    losses = event.losses if event.HasField("losses") else losses
                    if event.total_steps:
                        progress.update(task, total=event.total_steps, completed=event.step)
                    progress.update(task, status=_status(state, attempt, losses))
                    if event.HasField("preview"):
                        preview.write_bytes(event.preview.data)
                    if _terminal(state):
                        events.cancel()
                        break
            except grpc.RpcError as broken:
                if broken.code() != grpc.StatusCode.UNAVAILABLE or failures >= RECONNECTS:
                    raise
                retry(f"stream lost ({broken.details()})")
                continue
            if not _terminal(state):
                # The stream ended without the terminal event: ask for the record, resume if need be.
                job = stub.GetJob(jobs_pb2.GetJobRequest(id=job_id), timeout=RPC_TIMEOUT, metadata=_metadata(api_key))
                if _terminal(job.state):
                    state, error = job.state, job.error or error
                    progress.update(task, status=_status(state, job.attempt, job.losses))
                elif failures >= RECONNECTS:
                    typer.echo(f"error: the watch stream of job {job_id} keeps ending before the job does", err=True)
                    raise typer.Exit(1)
                else:
                    retry("stream ended early")
    if state != jobs_pb2.JOB_STATE_SUCCEEDED:
        typer.echo(f"error: job {job_id} {_state_name(state)}: {error or 'no reason given'}", err=True)
        raise typer.Exit(1)
    _write_result(stub, job_id, output, api_key)


def _write_result(stub: Any, job_id: str, output: Path, api_key: str) -> None:
    from genserve.v1 import jobs_pb2

    result = stub.GetJobResult(
        jobs_pb2.GetJobResultRequest(id=job_id), timeout=RPC_TIMEOUT, metadata=_metadata(api_key)
    )
    output.write_bytes(result.image.data)
    typer.echo(f"wrote {output} ({result.image.width}x{result.image.height}, loss {result.losses.total:.4g})")


def _watch_command(
    channel: object, job_id: str, output: Path | None, preview: Path | None, after: str, api_key: str
) -> None:
    try:
        _follow(
            _stub(channel),
            job_id,
            api_key=api_key,
            output=output or Path(f"{job_id}.png"),
            preview=preview or Path(f"{job_id}.preview.png"),
            after=after,
            wait=lambda delay: _wait_for(channel, delay),
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
    from genserve.v1 import jobs_pb2

    request = style_request_from(locals())
    with _channel(address) as channel:
        job = _stub(channel).SubmitStyleTransfer(
            jobs_pb2.SubmitStyleTransferRequest(request=request, idempotency_key=idempotency_key),
            timeout=RPC_TIMEOUT,
            metadata=_metadata(api_key),
        )
        typer.echo(f"job {job.id} {_state_name(job.state)}")
        if watch:
            _watch_command(channel, job.id, output, preview, "", api_key)


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

    from genserve.v1 import jobs_pb2

    state_value = _enum_value(jobs_pb2.JobState, "JOB_STATE_", state, "--state")
    table = Table("id", "state", "step", "total loss", "attempt", "created", "error")
    more = False
    with _channel(address) as channel:
        stub = _stub(channel)
        token = ""
        while True:
            response = stub.ListJobs(
                jobs_pb2.ListJobsRequest(state=state_value, page_size=page_size, page_token=token),
                timeout=RPC_TIMEOUT,
                metadata=_metadata(api_key),
            )
            for job in response.jobs:
                table.add_row(
                    job.id,
                    _state_name(job.state),
                    f"{job.step}/{job.total_steps}" if job.total_steps else "",
                    f"{job.losses.total:.4g}" if job.HasField("losses") else "",
                    str(job.attempt or ""),
                    _when(job, "created_at"),
                    job.error,
                )
            token = response.next_page_token
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
    from genserve.v1 import jobs_pb2

    with _channel(address) as channel:
        job = _stub(channel).GetJob(jobs_pb2.GetJobRequest(id=job_id), timeout=RPC_TIMEOUT, metadata=_metadata(api_key))
    rows = [
        ("id", job.id),
        ("state", _state_name(job.state)),
        ("step", f"{job.step}/{job.total_steps}"),
        ("attempt", str(job.attempt)),
    ]
    if job.HasField("losses"):
        terms = job.losses
        losses = f"total {terms.total:.4g} · content {terms.content:.4g} · style {terms.style:.4g} · tv {terms.tv:.4g}"
        rows.append(("losses", losses))
    for label, field in (
        ("created", "created_at"),
        ("started", "started_at"),
        ("finished", "finished_at"),
        ("expires", "expires_at"),
    ):
        rows.append((label, _when(job, field)))
    rows += [("idempotency key", job.idempotency_key), ("error", job.error)]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        if value:
            typer.echo(f"{label:<{width}}  {value}")


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
    with _channel(address) as channel:
        _watch_command(channel, job_id, output, preview, after, api_key)


@jobs_app.command("cancel")
def cancel(
    job_id: JobIdArgument,
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """Cancel a queued or running job; prints the state it is in now."""
    from genserve.v1 import jobs_pb2

    with _channel(address) as channel:
        job = _stub(channel).CancelJob(
            jobs_pb2.CancelJobRequest(id=job_id), timeout=RPC_TIMEOUT, metadata=_metadata(api_key)
        )
    typer.echo(f"job {job.id} {_state_name(job.state)}")


@jobs_app.command("result")
def result(
    job_id: JobIdArgument,
    output: Annotated[Path, typer.Argument(help="Where to write the result (PNG).")],
    address: AddressOption = "127.0.0.1:50051",
    api_key: KeyOption = "",
) -> None:
    """Fetch a succeeded job's image."""
    with _channel(address) as channel:
        _write_result(_stub(channel), job_id, output, api_key)
