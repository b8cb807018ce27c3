"""The text service's domain layer: validated requests in, completions out, no protobuf.

`TextGenerator` validates requests against the loaded models and hands them to the decode
process (decode_client.py). `stream()` yields lists of `CompletionUpdate`s as they are released
(all that arrived since the last read, so a slow reader gets fewer, larger chunks and nothing is
dropped); leaving the iterator early, by cancellation, deadline or error, removes the request's
rows from the batch at the next step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from genserve.common.config import TextSettings
from genserve.common.errors import InvalidArgument, NotFound, require_range
from genserve.common.seeds import fresh_seed
from genserve.text.decode_client import DecodeProcess
from genserve.text.protocol import (
    CompletionSpec,
    CompletionUpdate,
    GenerationSpec,
    ModelDescription,
    SamplingConfig,
    Submit,
)

MAX_STOP_SEQUENCES = 8
MAX_STOP_CHARS = 64
MAX_TOP_LOGPROBS = 10
MAX_TEMPERATURE = 5.0
MAX_PENALTY = 2.0
MAX_REPETITION_PENALTY = 10.0


@dataclass(frozen=True)
class GenerationRequest:
    """A text request as the client gave it, unchecked: `TextGenerator.plan` checks it once and
    turns it into the GenerationSpec the decode process runs."""

    prompt: str
    model: str = ""
    max_tokens: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # as given: `plan` checks it
    seed: int | None = None
    stop: Sequence[str] = ()
    n: int = 0
    logprobs: bool = False
    top_logprobs: int = 0
    temperatures: Sequence[float] = ()


@dataclass(frozen=True)
class PlannedCompletion:
    index: int
    temperature: float
    seed: int


@dataclass(frozen=True)
class GenerationPlan:
    """What a validated request will run: shown to the caller before the first token."""

    model: str
    prompt_tokens: int
    seed: int
    completions: tuple[PlannedCompletion, ...]


def derive_seed(request_seed: int, index: int) -> int:
    """Each completion's generator seed: distinct per index, fixed by the request seed."""
    return (request_seed * 1_000_003 + index * 7_919 + 1) % (1 << 64)


class TextGenerator:
    def __init__(
        self, settings: TextSettings, models: dict[str, ModelDescription], default_model: str, decoder: DecodeProcess
    ) -> None:
        self.settings = settings
        self.models = models
        self.default_model = default_model
        self.decoder = decoder

    # --- validation ------------------------------------------------------------------------

    def resolve_model(self, name: str) -> ModelDescription:
        model = self.models.get(name or self.default_model)
        if model is None:
            raise NotFound(f"unknown text model {name!r}; available: {', '.join(sorted(self.models))}")
        return model

    def _sampling(self, given: SamplingConfig, temperature: float, vocab_size: int) -> SamplingConfig:
        """`given`, checked, with one completion's `temperature` (checked by the caller)."""
        if not 0 <= given.top_k <= vocab_size:
            raise InvalidArgument(f"sampling.top_k must be in [0, {vocab_size}] (0 = off), got {given.top_k}")
        require_range("sampling.top_p", given.top_p, 0.0, 1.0, low_open=True)
        require_range("sampling.min_p", given.min_p, 0.0, 1.0, high_open=True)
        require_range(
            "sampling.repetition_penalty", given.repetition_penalty, 0.0, MAX_REPETITION_PENALTY, low_open=True
        )
        require_range("sampling.presence_penalty", given.presence_penalty, -MAX_PENALTY, MAX_PENALTY)
        require_range("sampling.frequency_penalty", given.frequency_penalty, -MAX_PENALTY, MAX_PENALTY)
        return dataclasses.replace(given, temperature=temperature)

    def plan(self, request: GenerationRequest, incremental: bool = True) -> tuple[GenerationPlan, GenerationSpec]:
        """Check everything before any work is queued: the plan shown to the caller and the spec to run.

        incremental=False: each completion is delivered whole, once finished.
        """
        settings = self.settings
        model = self.resolve_model(request.model)
        if not request.prompt:
            raise InvalidArgument("prompt must not be empty")
        if len(request.prompt) > settings.max_prompt_chars:
            raise InvalidArgument(
                f"prompt has {len(request.prompt)} characters; at most {settings.max_prompt_chars} are allowed"
            )
        unknown = model.vocab.unknown_chars(request.prompt)
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise InvalidArgument(
                f"prompt contains characters outside the vocabulary of {model.entry.name!r}: {shown}; "
                f"allowed: {''.join(model.vocab.chars)!r}"
            )
        max_tokens = request.max_tokens or settings.default_max_tokens
        if not 1 <= max_tokens <= settings.max_tokens:
            raise InvalidArgument(
                f"max_tokens must be in [1, {settings.max_tokens}] (0 = default {settings.default_max_tokens}), "
                f"got {request.max_tokens}"
            )
        if len(request.stop) > MAX_STOP_SEQUENCES:
            raise InvalidArgument(f"stop has {len(request.stop)} sequences; at most {MAX_STOP_SEQUENCES} are allowed")
        for i, stop in enumerate(request.stop):
            if not 1 <= len(stop) <= MAX_STOP_CHARS:
                raise InvalidArgument(f"stop[{i}] must have 1 to {MAX_STOP_CHARS} characters, got {len(stop)}")
        if request.n < 0:
            raise InvalidArgument(f"n must be >= 0 (0 = 1), got {request.n}")
        if not 0 <= request.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidArgument(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {request.top_logprobs}")
        if request.top_logprobs and not request.logprobs:
            raise InvalidArgument("top_logprobs needs logprobs=true")
        n = request.n or 1
        temperatures = list(request.temperatures) or [request.sampling.temperature]
        for i, temperature in enumerate(temperatures):
            field_name = f"temperatures[{i}]" if request.temperatures else "sampling.temperature"
            if not math.isfinite(temperature) or not 0 <= temperature <= MAX_TEMPERATURE:
                raise InvalidArgument(
                    f"{field_name} must be in [0, {MAX_TEMPERATURE:g}] (0 = greedy), got {temperature}"
                )
        total = n * len(temperatures)
        if total > settings.max_completions:
            raise InvalidArgument(
                f"n × temperatures = {n} × {len(temperatures)} = {total} completions; "
                f"at most {settings.max_completions} per request"
            )
        seed = request.seed if request.seed is not None else fresh_seed() >> 1
        specs: list[CompletionSpec] = []
        planned = []
        for t_index, temperature in enumerate(temperatures):
            sampling = self._sampling(request.sampling, temperature, model.vocab.size)
            for sample in range(n):
                index = t_index * n + sample
                completion_seed = derive_seed(seed, index)
                specs.append(CompletionSpec(index, sampling, completion_seed))
                planned.append(PlannedCompletion(index, temperature, completion_seed))
        prompt_ids = model.vocab.encode(request.prompt)
        plan = GenerationPlan(model.entry.name, len(prompt_ids), seed, tuple(planned))
        spec = GenerationSpec(
            prompt_ids=prompt_ids,
            completions=tuple(specs),
            max_tokens=max_tokens,
            stop=tuple(request.stop),
            logprobs=request.logprobs,
            top_logprobs=request.top_logprobs,
            incremental=incremental,
            flush_interval=settings.stream_flush_ms / 1000.0,
        )
        return plan, spec

    # --- running ---------------------------------------------------------------------------

    async def stream(
        self, request: GenerationRequest, incremental: bool = True
    ) -> AsyncIterator[GenerationPlan | list[CompletionUpdate]]:
        """Yield the plan first, then batches of updates until every completion finished.

        incremental=False: each completion arrives whole, once finished (for unary calls, which
        need no per-token hand-over).
        """
        plan, spec = self.plan(request, incremental)
        generation_id, queue = self.decoder.new_generation()
        self.decoder.submit(Submit(generation_id, plan.model, spec))
        remaining = len(spec.completions)
        try:
            yield plan
            while remaining:
                batch: list[CompletionUpdate] = []
                item = await queue.get()
                while True:
                    if isinstance(item, BaseException):
                        raise item
                    batch.extend(item)  # type: ignore[arg-type]
                    if queue.empty():
                        break
                    item = queue.get_nowait()
                remaining -= sum(1 for update in batch if update.finish is not None)
                yield batch
        finally:
            # Leaving early (cancelled, deadline, error) frees the batch slots at the next step.
            self.decoder.release(generation_id, cancel=remaining > 0)
