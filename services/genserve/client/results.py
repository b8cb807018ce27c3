"""Plain results of the client's calls: dataclasses built from the protobuf answers.

Enums become lower-case strings (`JobState.RUNNING == "running"`, finish reason "length"/"stop"),
timestamps timezone-aware datetimes (None when unset), latent vectors numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np

from genserve.client.images import ImageResult
from genserve.v1 import jobs_pb2, latent_pb2, models_pb2, text_pb2, vision_pb2

Result = TypeVar("Result")


def _copied(cls: type[Result], message: Any, **converted: Any) -> Result:
    """Dataclass `cls` from `message`: each field takes the message's field of the same name, except
    the `converted` ones (enums, images, times, repeated fields), given as they should be."""
    plain = {item.name: getattr(message, item.name) for item in fields(cls) if item.name not in converted}  # type: ignore[arg-type]
    return cls(**plain, **converted)


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    """FINISH_REASON_LENGTH → "length"; 0 (unspecified) → ""."""
    if not value:
        return ""
    try:
        return str(enum.Name(value)).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def _time(message: Any, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


def _image(message: Any, name: str) -> ImageResult | None:
    return ImageResult.from_proto(getattr(message, name)) if message.HasField(name) else None


def _vectors(vectors: Any) -> np.ndarray:
    """Repeated LatentVector → float32 array (count, dim); (0, 0) when there are none."""
    rows = [list(vector.values) for vector in vectors]
    return np.asarray(rows, dtype=np.float32) if rows else np.zeros((0, 0), dtype=np.float32)


# --- text -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    text: str
    id: int
    # Natural log of its probability under the model (temperature 1, before filtering).
    logprob: float
    # The most likely alternatives at this position: (token, logprob), most likely first.
    top_logprobs: list[tuple[str, float]] = field(default_factory=list)

    @classmethod
    def from_proto(cls, message: text_pb2.Token) -> Token:
        alternatives = [(item.token, item.logprob) for item in message.top_logprobs]
        return cls(message.text, message.id, message.logprob, alternatives)


def _finish_reason(message: Any) -> str:
    return _enum_name(text_pb2.FinishReason, message.finish_reason, "FINISH_REASON_")


def _tokens(message: Any) -> list[Token]:
    return [Token.from_proto(token) for token in message.tokens]


@dataclass(frozen=True)
class Completion:
    index: int
    text: str
    temperature: float
    # "length" (max_tokens reached) or "stop" (a stop sequence).
    finish_reason: str
    completion_tokens: int
    seed: int
    # Filled when logprobs were asked for.
    tokens: list[Token] = field(default_factory=list)

    @classmethod
    def from_proto(cls, message: text_pb2.Completion) -> Completion:
        return _copied(cls, message, finish_reason=_finish_reason(message), tokens=_tokens(message))


@dataclass(frozen=True)
class Generation:
    """The answer of `generate`: every completion, ordered by index."""

    model: str
    completions: list[Completion]
    prompt_tokens: int
    # The request seed actually used.
    seed: int

    @property
    def text(self) -> str:
        """The first completion's text (the only one unless n or temperatures asked for more)."""
        return self.completions[0].text if self.completions else ""

    @classmethod
    def from_proto(cls, message: text_pb2.GenerateResponse) -> Generation:
        completions = [Completion.from_proto(item) for item in message.completions]
        return cls(message.model, completions, message.prompt_tokens, message.seed)


@dataclass(frozen=True)
class TextPiece:
    """One message of `generate_stream`: text added to completion `index`.

    Pieces of different completions interleave; `finish_reason` is set on a completion's last
    piece; `model`, `prompt_tokens` and `seed` on the stream's first piece only.
    """

    index: int
    text: str
    finish_reason: str
    temperature: float
    completion_tokens: int
    model: str
    prompt_tokens: int
    seed: int
    tokens: list[Token] = field(default_factory=list)

    @classmethod
    def from_proto(cls, message: text_pb2.GenerateStreamResponse) -> TextPiece:
        return _copied(cls, message, finish_reason=_finish_reason(message), tokens=_tokens(message))


# --- vision -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DreamProgress:
    """One event of a dream; the last one carries `result`."""

    octave: int
    step: int
    steps_done: int
    total_steps: int
    loss: float
    elapsed_seconds: float
    seed: int
    preview: ImageResult | None = None
    result: ImageResult | None = None

    @classmethod
    def from_proto(cls, message: vision_pb2.DreamEvent) -> DreamProgress:
        return _copied(cls, message, preview=_image(message, "preview"), result=_image(message, "result"))


@dataclass(frozen=True)
class StyleLosses:
    """The loss terms at one step, already multiplied by their weights."""

    content: float
    style: float
    tv: float
    total: float

    @classmethod
    def from_proto(cls, message: vision_pb2.StyleLosses) -> StyleLosses:
        return cls(message.content, message.style, message.tv, message.total)


def _losses(message: Any) -> StyleLosses | None:
    return StyleLosses.from_proto(message.losses) if message.HasField("losses") else None


@dataclass(frozen=True)
class StyleProgress:
    """One event of a style preview; the last one carries `result`."""

    step: int
    total_steps: int
    losses: StyleLosses | None
    elapsed_seconds: float
    seed: int
    preview: ImageResult | None = None
    result: ImageResult | None = None

    @classmethod
    def from_proto(cls, message: vision_pb2.StyleEvent) -> StyleProgress:
        images = {"preview": _image(message, "preview"), "result": _image(message, "result")}
        return _copied(cls, message, losses=_losses(message), **images)


# --- latent -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatentImages:
    """Images from the latent service, in request order, with the latent point behind each."""

    model: str
    images: list[ImageResult]
    # float32 (len(images), latent_dim) when the service returned them, else shape (0, 0).
    latents: np.ndarray
    # The request seed actually used (sample).
    seed: int

    @classmethod
    def from_proto(cls, message: latent_pb2.ImagesResponse) -> LatentImages:
        images = [ImageResult.from_proto(image) for image in message.images]
        return cls(message.model, images, _vectors(message.latents), message.seed)


@dataclass(frozen=True)
class Encodings:
    """Posterior of each encoded image: float32 arrays (count, latent_dim)."""

    model: str
    mean: np.ndarray
    log_variance: np.ndarray

    @classmethod
    def from_proto(cls, message: latent_pb2.EncodeResponse) -> Encodings:
        means = _vectors([item.mean for item in message.encodings])
        log_variances = _vectors([item.log_variance for item in message.encodings])
        return cls(message.model, means, log_variances)


@dataclass(frozen=True)
class Manifold:
    model: str
    # All tiles in one PNG, row-major, grid_size per side.
    grid: ImageResult
    grid_size: int

    @classmethod
    def from_proto(cls, message: latent_pb2.ManifoldResponse) -> Manifold:
        return cls(message.model, ImageResult.from_proto(message.grid), message.grid_size)


@dataclass(frozen=True)
class Concept:
    name: str
    model: str
    # "label", "attribute" or "user".
    source: str
    description: str
    norm: float
    positives: int
    negatives: int

    @classmethod
    def from_proto(cls, message: latent_pb2.Concept) -> Concept:
        return _copied(cls, message)


# --- models -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    # "text", "vision" or "latent".
    family: str
    architecture: str
    parameter_count: int
    device: str
    is_default: bool
    metrics: dict[str, float]
    data_source: str
    command: str
    layers: list[str]
    details: dict[str, str]
    sha256: str

    @classmethod
    def from_proto(cls, message: models_pb2.ModelInfo) -> ModelInfo:
        maps = {"metrics": dict(sorted(message.metrics.items())), "details": dict(sorted(message.details.items()))}
        return _copied(cls, message, layers=list(message.layers), **maps)


# --- jobs -------------------------------------------------------------------------------------


class JobState(StrEnum):
    UNSPECIFIED = ""
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    @classmethod
    def from_proto(cls, value: int) -> JobState:
        return cls(_enum_name(jobs_pb2.JobState, value, "JOB_STATE_"))


class JobEventKind(StrEnum):
    UNSPECIFIED = ""
    # The job changed state.
    STATE = "state"
    # Optimisation progress (step, losses, maybe a preview).
    PROGRESS = "progress"
    # A new attempt resumed the job from a checkpoint.
    RESUMED = "resumed"


@dataclass(frozen=True)
class Job:
    id: str
    state: JobState
    step: int
    total_steps: int
    losses: StyleLosses | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    # 1 for the first run; higher when another worker resumed the job.
    attempt: int
    # Why it FAILED (or was CANCELLED).
    error: str
    idempotency_key: str
    expires_at: datetime | None

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    @classmethod
    def from_proto(cls, message: jobs_pb2.Job) -> Job:
        times = {name: _time(message, name) for name in ("created_at", "started_at", "finished_at", "expires_at")}
        return _copied(cls, message, state=JobState.from_proto(message.state), losses=_losses(message), **times)


@dataclass(frozen=True)
class JobEvent:
    """One event of `watch_job`. `event_id` is "" only on a closing event made from the job's
    record, when its event history ended without the terminal event (see `watch_job`)."""

    event_id: str
    job_id: str
    kind: JobEventKind
    # The state after this event.
    state: JobState
    step: int
    total_steps: int
    losses: StyleLosses | None
    preview: ImageResult | None
    attempt: int
    time: datetime | None
    error: str

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    @classmethod
    def from_proto(cls, message: jobs_pb2.JobEvent) -> JobEvent:
        return _copied(
            cls,
            message,
            kind=JobEventKind(_enum_name(jobs_pb2.JobEventKind, message.kind, "JOB_EVENT_KIND_")),
            state=JobState.from_proto(message.state),
            losses=_losses(message),
            preview=_image(message, "preview"),
            time=_time(message, "time"),
        )

    @classmethod
    def closing(cls, job: Job) -> JobEvent:
        """The terminal event as the job's record tells it (no event id); state, steps, losses,
        attempt and error are the record's."""
        return _copied(
            cls, job, event_id="", job_id=job.id, kind=JobEventKind.STATE, preview=None, time=job.finished_at
        )


@dataclass(frozen=True)
class JobResult:
    id: str
    image: ImageResult
    losses: StyleLosses | None

    @classmethod
    def from_proto(cls, message: jobs_pb2.JobResult) -> JobResult:
        return cls(message.id, ImageResult.from_proto(message.image), _losses(message))


@dataclass(frozen=True)
class JobPage:
    """One page of `list_jobs`, newest first; `next_page_token` is "" on the last page."""

    jobs: list[Job]
    next_page_token: str

    @classmethod
    def from_proto(cls, message: jobs_pb2.ListJobsResponse) -> JobPage:
        return cls([Job.from_proto(job) for job in message.jobs], message.next_page_token)
