"""`genserve jobs ...` without a server: the request builder, the help texts, the watch loop on a fake stub
(the client library's `watch_job` under the command's rendering)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import typer
from typer.testing import CliRunner

from genserve.cli import app
from genserve.client import Client, NotFound, Unavailable
from genserve.commands import jobs
from genserve.commands.client import style_preview, style_request
from genserve.v1 import common_pb2, jobs_pb2, vision_pb2


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    paths = {"content": tmp_path / "cat.png", "style": tmp_path / "hubble.png", "colon": tmp_path / "a:b.png"}
    for name, path in paths.items():
        path.write_bytes(name.encode())
    return paths


def test_style_request_maps_the_options(images: dict[str, Path]) -> None:
    request = style_request(
        content=images["content"],
        style=[f"{images['style']}:2.5", str(images["colon"])],
        content_layer="relu3_2",
        style_layer=["relu1_1:0.5", "relu2_1"],
        content_weight=0.0,
        style_weight=1e4,
        optimizer="adam",
        learning_rate=2.0,
        init="noise",
        color="luminance",
        iterations=300,
        max_size=512,
        scales=2,
        seed=7,
        preview_every=10,
    )
    assert request.content.data == b"content"
    assert [(s.image.data, s.weight) for s in request.styles] == [(b"style", 2.5), (b"colon", 0.0)]
    params = request.params
    assert params.content_layer == "relu3_2"
    assert [(layer.layer, layer.weight) for layer in params.style_layers] == [("relu1_1", 0.5), ("relu2_1", 0.0)]
    # Presence: 0.0 is sent (pure texture synthesis), None leaves the service default.
    assert params.HasField("content_weight") and params.content_weight == 0.0
    assert params.HasField("style_weight") and params.style_weight == 1e4
    assert not params.HasField("tv_weight")
    assert params.optimizer == vision_pb2.STYLE_OPTIMIZER_ADAM
    assert params.init == vision_pb2.STYLE_INIT_NOISE
    assert params.color == vision_pb2.COLOR_PRESERVATION_LUMINANCE
    assert (params.learning_rate, params.iterations, params.max_size, params.scales, params.preview_every) == (
        2.0,
        300,
        512,
        2,
        10,
    )
    assert request.HasField("seed") and request.seed == 7


def test_style_request_defaults_leave_everything_to_the_service(images: dict[str, Path]) -> None:
    request = style_request(content=images["content"], style=[str(images["style"])])
    params = request.params
    assert not any(params.HasField(field) for field in ("content_weight", "style_weight", "tv_weight"))
    assert params.optimizer == params.init == params.color == 0
    assert not request.HasField("seed") and request.styles[0].weight == 0.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"optimizer": "sgd"}, "lbfgs, adam"),
        ({"init": "zeros"}, "noise"),
        ({"color": "sepia"}, "luminance"),
        ({"style": ["missing.png:heavy"]}, "PATH or PATH:WEIGHT"),
        ({"style": ["missing.png"]}, "cannot read missing.png"),
        ({"style_layer": ["relu1_1:x"]}, "--style-layer"),
    ],
)
def test_style_request_rejects_bad_options(images: dict[str, Path], options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"content": images["content"], "style": [str(images["style"])], **options}
    with pytest.raises(typer.BadParameter, match=message):
        style_request(**arguments)


def test_submit_takes_the_style_preview_options() -> None:
    preview = set(inspect.signature(style_preview).parameters) - {"output", "preview", "timeout"}
    submit = set(inspect.signature(jobs.submit).parameters)
    assert preview <= submit
    assert set(inspect.signature(style_request).parameters) <= submit


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ([], ["submit", "list", "show", "watch", "cancel", "result"]),
        (["submit"], ["--style", "--content-weight", "--tv-weight", "--scales", "--idempotency-key", "--watch"]),
        (["list"], ["--state", "--page-size", "--all"]),
        (["show"], ["JOB_ID", "--address", "--api-key"]),
        (["watch"], ["--output", "--preview", "--after"]),
        (["cancel"], ["JOB_ID"]),
        (["result"], ["JOB_ID", "OUTPUT"]),
    ],
)
def test_help(command: list[str], shown: list[str]) -> None:
    outcome = CliRunner().invoke(app, ["jobs", *command, "--help"], env={"COLUMNS": "200"})
    assert outcome.exit_code == 0, outcome.output
    for text in shown:
        assert text.lower() in outcome.output.lower()


def test_a_bad_state_is_refused_before_any_call() -> None:
    outcome = CliRunner().invoke(app, ["jobs", "list", "--state", "done", "--address", "127.0.0.1:1"])
    assert outcome.exit_code != 0 and "succeeded" in outcome.output


class Broken(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Stream:
    """Yields its events, then raises `error` if given (a stream that breaks)."""

    def __init__(self, events: list[jobs_pb2.JobEvent], error: Exception | None = None) -> None:
        self.events, self.error = events, error

    def __iter__(self) -> Iterator[jobs_pb2.JobEvent]:
        yield from self.events
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        pass


class FakeJobs:
    """WatchJob answers from a list of streams; GetJob/GetJobResult from fixed records."""

    def __init__(self, streams: list[Stream], state: int = jobs_pb2.JOB_STATE_RUNNING) -> None:
        self.streams = streams
        self.watched: list[str] = []
        self.state = state

    def WatchJob(self, request: jobs_pb2.WatchJobRequest, **_: Any) -> Stream:
        self.watched.append(request.after_event_id)
        return self.streams.pop(0)

    def GetJob(self, request: jobs_pb2.GetJobRequest, **_: Any) -> jobs_pb2.Job:
        return jobs_pb2.Job(id=request.id, state=self.state)

    def GetJobResult(self, request: jobs_pb2.GetJobResultRequest, **_: Any) -> jobs_pb2.JobResult:
        image = common_pb2.Image(data=b"png", width=4, height=3)
        return jobs_pb2.JobResult(id=request.id, image=image, losses=vision_pb2.StyleLosses(total=1.5))


def event(number: int, kind: int, state: int, step: int = 0, **fields: Any) -> jobs_pb2.JobEvent:
    return jobs_pb2.JobEvent(
        event_id=f"{number}-0", job_id="j1", kind=kind, state=state, step=step, total_steps=4, **fields
    )


STATE, PROGRESS, RESUMED = (
    jobs_pb2.JOB_EVENT_KIND_STATE,
    jobs_pb2.JOB_EVENT_KIND_PROGRESS,
    jobs_pb2.JOB_EVENT_KIND_RESUMED,
)
RUNNING, SUCCEEDED, FAILED = jobs_pb2.JOB_STATE_RUNNING, jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED
UNAVAILABLE = Broken(grpc.StatusCode.UNAVAILABLE, "connection reset")


def follow(stub: FakeJobs, tmp_path: Path, waits: list[float] | None = None) -> None:
    # A client that never connects: its job stub is the fake, its pauses are recorded.
    with Client("127.0.0.1:1") as client:
        client._jobs = stub  # type: ignore[assignment]
        client._pause = (waits if waits is not None else []).append
        jobs._follow(client, "j1", output=tmp_path / "out.png", preview=tmp_path / "preview.png")


def test_watch_resumes_after_the_last_event_and_writes_the_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preview = common_pb2.Image(data=b"preview")
    losses = vision_pb2.StyleLosses(total=2.0)
    stub = FakeJobs(
        [
            Stream(
                [event(1, STATE, RUNNING, attempt=1), event(2, PROGRESS, RUNNING, 1, losses=losses, preview=preview)],
                UNAVAILABLE,
            ),
            Stream([], UNAVAILABLE),
            Stream([event(3, RESUMED, RUNNING, 1, attempt=2), event(4, STATE, SUCCEEDED, 4, attempt=2)]),
        ]
    )
    waits: list[float] = []
    follow(stub, tmp_path, waits)
    assert stub.watched == ["", "2-0", "2-0"]
    assert waits == [0.5, 1.0]
    assert (tmp_path / "preview.png").read_bytes() == b"preview"
    assert (tmp_path / "out.png").read_bytes() == b"png"
    out = capsys.readouterr().out
    assert "resumed: attempt 2 from step 1" in out and "succeeded" in out and "wrote" in out


def test_watch_exits_1_with_the_error_of_a_failed_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stub = FakeJobs([Stream([event(1, STATE, RUNNING), event(2, STATE, FAILED, 2, error="out of memory")])])
    with pytest.raises(typer.Exit) as info:
        follow(stub, tmp_path)
    assert info.value.exit_code == 1
    assert "error: job j1 failed: out of memory" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_watch_gives_up_after_a_few_reconnects(tmp_path: Path) -> None:
    reconnects = Client("127.0.0.1:1").retry.attempts
    stub = FakeJobs([Stream([], UNAVAILABLE) for _ in range(reconnects + 1)])
    with pytest.raises(Unavailable):
        follow(stub, tmp_path)
    assert len(stub.watched) == reconnects + 1


def test_watch_does_not_retry_other_errors(tmp_path: Path) -> None:
    stub = FakeJobs([Stream([], Broken(grpc.StatusCode.NOT_FOUND, "no job j1")), Stream([])])
    with pytest.raises(NotFound):
        follow(stub, tmp_path)
    assert stub.watched == [""]


def test_watch_asks_for_the_record_when_the_stream_ends_early(tmp_path: Path) -> None:
    stub = FakeJobs([Stream([event(1, STATE, RUNNING)])], state=SUCCEEDED)
    follow(stub, tmp_path)
    assert (tmp_path / "out.png").read_bytes() == b"png"
