"""What the text service's two processes say to each other: no torch, no grpc.

The gRPC process (servicer → generator → decode_client) checks a request once and turns it into
a `GenerationSpec`; the decode process (decode_process → engine) runs it and sends back
`CompletionUpdate`s. Over two one-way pipes (pickled dataclasses; this is not a trust boundary):
the gRPC process sends `Submit`, `Cancel` and `Stop`; the decode process answers `Ready` (or
`Failed`) once, then one `Updates` per decoding tick that produced anything.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from genserve.common.errors import GenserveError
from genserve.common.model_store import ModelEntry, Selection
from genserve.text.engine_stats import StatsBuffer
from genserve.text.vocab import CharVocab


@dataclass(frozen=True)
class SamplingConfig:
    """Checked controls of one completion (see text.proto SamplingParams for ranges)."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class CompletionSpec:
    """One completion of a request: its index in the reply, its controls and its generator's seed."""

    index: int
    sampling: SamplingConfig
    seed: int


@dataclass(frozen=True)
class GenerationSpec:
    """A checked text request, as the engine runs it (made by `TextGenerator.plan` only).

    prompt_ids: the prompt's token ids; completions: one per sampled sequence; max_tokens: per
    completion; stop: sequences that end a completion (never released); logprobs/top_logprobs:
    per-token details wanted; incremental: False delivers each completion once, when finished;
    flush_interval: seconds between hand-overs of an incremental request's updates (the first
    and a finished completion's last go at once; in between the text piles up in its row).
    """

    prompt_ids: list[int]
    completions: tuple[CompletionSpec, ...]
    max_tokens: int
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    incremental: bool = True
    flush_interval: float = 0.0


class Finish(enum.Enum):
    LENGTH = "length"
    STOP = "stop"


@dataclass(frozen=True)
class TokenOut:
    id: int
    text: str
    logprob: float | None = None
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class CompletionUpdate:
    """Newly released part of one completion; `finish` is set on its last update."""

    index: int
    text: str
    tokens: tuple[TokenOut, ...]
    finish: Finish | None = None
    completion_tokens: int = 0


@dataclass(frozen=True)
class DecodeConfig:
    """What the decode process needs to load its models and size its batches."""

    model_store: Path
    selection: Selection  # which models to load and the default (ModelStore.select)
    device: str
    torch_threads: int
    max_batch: int
    max_waiting: int
    onednn_min_batch: int
    stream_max_messages: float = 0.0
    log_level: str = "INFO"


@dataclass(frozen=True)
class ModelDescription:
    """What the gRPC process needs to check requests and describe a model; no weights."""

    entry: ModelEntry
    vocab: CharVocab
    architecture: str
    device: str
    details: dict[str, str]


# --- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submit:
    generation_id: int
    model: str
    spec: GenerationSpec


@dataclass(frozen=True)
class Cancel:
    generation_id: int


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Ready:
    models: dict[str, ModelDescription]
    default: str


@dataclass(frozen=True)
class Failed:
    message: str


@dataclass(frozen=True)
class ErrorReport:
    """A GenserveError, flattened: its status code name and message."""

    code: str
    message: str

    @classmethod
    def of(cls, error: BaseException) -> ErrorReport:
        if isinstance(error, GenserveError):
            return cls(error.code.name, error.message)
        return cls(grpc.StatusCode.INTERNAL.name, "internal error")


# What one generation receives in an `Updates` message: released updates, or why it ended.
Outcome = list[CompletionUpdate] | ErrorReport


@dataclass(frozen=True)
class Updates:
    outcomes: list[tuple[int, Outcome]]  # (generation_id, outcome)
    stats: list[StatsBuffer] = field(default_factory=list)
