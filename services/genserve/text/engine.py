"""Continuous batching: one forward step per tick over all active rows of a model.

A request (`Generation`) becomes one row per completion. Each tick: waiting generations are
admitted (prompt prefilled, rows appended), cancelled rows are dropped, every row samples its
next token from its own controls and seeded generator, finished rows leave, and the survivors
advance one step together. Updates go back through `generation.deliver`, called on the decoding thread
(the decode process's outbox collects them for the gRPC process).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genserve.common.errors import GenserveError, ResourceExhausted
from genserve.text.decoding import (
    DEFAULT_ONEDNN_MIN_BATCH,
    PREFILL_ONEDNN_MIN_TOKENS,
    BatchDecoder,
    batch_decoder,
    compaction_order,
)
from genserve.text.engine_stats import StatsBuffer
from genserve.text.models import LanguageModel
from genserve.text.protocol import CompletionSpec, CompletionUpdate, Finish, GenerationSpec, SamplingConfig, TokenOut
from genserve.text.sampling import BatchControls, choose_tokens
from genserve.text.stops import find_stop, held_back
from genserve.text.vocab import CharVocab

log = logging.getLogger(__name__)


class EngineFailure(GenserveError):
    """The decoding step failed; every generation in the batch gets this (INTERNAL)."""


Delivery = list[CompletionUpdate] | BaseException
Deliver = Callable[[Delivery], None]


@dataclass(eq=False)
class Generation:
    """A request being decoded: its checked spec, where its updates go, and its live state."""

    spec: GenerationSpec
    deliver: Deliver
    last_flush: float = -math.inf
    rows: list[Any] = field(default_factory=list)  # its _Rows, set at admission
    cancelled: bool = False  # set by the caller's thread; read at every tick
    submitted_at: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        self.cancelled = True


class _Row:
    """Decoding state of one completion. Sampled text accumulates here; `take_update()` hands
    over what may be released, when the engine flushes the generation."""

    __slots__ = (
        "completion", "finish", "forced", "generated", "generation", "pending", "releasable", "released", "reported",
        "rng", "text",
    )  # fmt: skip

    def __init__(self, generation: Generation, completion: CompletionSpec, forced: Sequence[int] = ()) -> None:
        self.generation = generation
        self.completion = completion
        # Prompt tokens still to be fed through the batched steps (short prompts are read this way).
        self.forced: deque[int] = deque(forced)
        self.rng = np.random.default_rng(completion.seed)
        self.generated = 0
        self.text = ""
        self.released = 0  # characters of `text` handed to the caller
        self.releasable = 0  # characters of `text` that may be handed over
        self.finish: Finish | None = None
        self.reported = False  # the finishing update went out
        self.pending: deque[TokenOut] = deque()  # tokens whose text is not released yet

    def advance(self, piece: str, token: TokenOut | None) -> bool:
        """Append a sampled token's text (and its details, when the generation wants logprobs).
        True when the completion just finished."""
        spec = self.generation.spec
        self.generated += 1
        previous = len(self.text)
        self.text += piece
        if token is not None:
            self.pending.append(token)
        if spec.stop:
            stop_at = find_stop(self.text, previous, spec.stop)
            if stop_at is not None:
                self.finish, self.releasable = Finish.STOP, max(stop_at, self.released)
                return True
        if self.generated >= spec.max_tokens:
            self.finish, self.releasable = Finish.LENGTH, len(self.text)  # a held-back stop prefix too
            return True
        if spec.incremental:
            self.releasable = len(self.text) - (held_back(self.text, spec.stop) if spec.stop else 0)
        return False

    def take_update(self) -> CompletionUpdate | None:
        """What became releasable since the last call (None if nothing)."""
        if self.releasable <= self.released and (self.finish is None or self.reported):
            return None
        tokens = self._release_tokens(self.releasable)
        text = self.text[self.released : self.releasable]
        self.released = self.releasable
        self.reported = self.finish is not None
        return CompletionUpdate(self.completion.index, text, tokens, self.finish, self.generated if self.finish else 0)

    def _release_tokens(self, release_to: int) -> tuple[TokenOut, ...]:
        # Tokens are released whole; those overlapping a stop sequence are dropped.
        if not self.pending:
            return ()
        out = []
        position = self.released
        while self.pending and position + len(self.pending[0].text) <= release_to:
            token = self.pending.popleft()
            position += len(token.text)
            out.append(token)
        return tuple(out)


class DecodeEngine:
    """One model and every active sequence of it. `tick()` runs on the decoding thread
    (decode_loop.py); `submit()` may be called from any thread."""

    def __init__(
        self,
        name: str,
        model: LanguageModel,
        vocab: CharVocab,
        device: torch.device,
        wake: threading.Condition,
        max_batch: int = 64,
        max_waiting: int = 512,
        onednn_min_batch: int = DEFAULT_ONEDNN_MIN_BATCH,
        stream_messages_per_second: float = 0.0,
    ) -> None:
        self.name = name
        # Streams share a message budget: with many of them each flushes less often, so sending
        # messages never eats the CPU the decoding needs (0 = no budget).
        self.stream_messages_per_second = stream_messages_per_second
        self._stream_floor = 0.0
        self.model = model
        self.vocab = vocab
        self.device = device
        self.stats = StatsBuffer(name)  # drained by whoever serves the metrics
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.onednn_min_batch = onednn_min_batch
        self._waiting: deque[Generation] = deque()
        self._waiting_rows = 0
        self._wake = wake  # shared with the decoding loop, notified on every submit
        self._unflushed: dict[int, Generation] = {}  # generations holding updates not handed over yet
        self._awaiting_first: dict[int, Generation] = {}  # admitted generations without a sampled token
        # Called on the decoding thread right after updates were handed over, before the step's
        # forward pass: the decode process sends them then, so a finished request's reply (and a
        # stream's piece) does not wait for that pass, and a closed-loop client's next request
        # arrives a step sooner.
        self.on_dispatched: Callable[[], None] | None = None
        self._reset_batch()

    # --- caller side -----------------------------------------------------------------------

    def submit(self, generation: Generation) -> None:
        """Queue a generation; it joins the running batch at the next step with room for it."""
        rows = len(generation.spec.completions)
        if rows > self.max_batch:
            raise ResourceExhausted(f"the request needs {rows} sequences but at most {self.max_batch} decode together")
        with self._wake:
            if self._waiting_rows + rows > self.max_waiting:
                raise ResourceExhausted(
                    f"text model {self.name!r} is busy: {self._waiting_rows} sequences already wait "
                    f"for a batch slot (limit {self.max_waiting}); retry later"
                )
            self._waiting.append(generation)
            self._waiting_rows += rows
            self.stats.waiting = self._waiting_rows
            self._wake.notify()

    @property
    def active_rows(self) -> int:
        return len(self._rows)

    # --- decoding thread -------------------------------------------------------------------

    def drain_stats(self) -> StatsBuffer | None:
        with self._wake:
            return self.stats.drain()

    def has_work(self) -> bool:
        return bool(self._rows or self._waiting or self._unflushed)

    def tick(self) -> None:
        """One step; a failure fails the generations in the batch (logged), not the thread."""
        try:
            self._tick()
        except Exception:
            log.exception("decoding step of %s failed; failing %d rows", self.name, len(self._rows))
            failure = EngineFailure(f"decoding failed on model {self.name!r}")
            self._dispatch([(generation, failure) for generation in {row.generation for row in self._rows}])
            self._reset_batch()

    def fail_all(self, error: GenserveError) -> None:
        """Shutting down: every waiting and running generation gets `error`."""
        with self._wake:
            generations = {*self._waiting, *(row.generation for row in self._rows)}
            self._waiting.clear()
            self._waiting_rows = 0
        self._dispatch([(generation, error) for generation in generations])
        self._reset_batch()

    def _reset_batch(self) -> None:
        vocab = self.vocab.size
        self._decoder: BatchDecoder = batch_decoder(self.model, self.device, self.max_batch, self.onednn_min_batch)
        self._rows: list[_Row] = []
        self._unflushed.clear()
        self._awaiting_first.clear()
        self._logits = torch.zeros(0, vocab, device=self.device)
        self._seen = torch.zeros(0, vocab, dtype=torch.bool, device=self.device)
        self._counts = torch.zeros(0, vocab, device=self.device)
        # The rows' sampling controls, counted: while every row has the same (the common case), one
        # shared set serves the batch and rows join and leave without a rebuild.
        self._sampling_mix: Counter[SamplingConfig] = Counter()
        self._shared_sampling: SamplingConfig | None = None
        self._controls = BatchControls.of([], vocab, self.device)

    @staticmethod
    def _dispatch(deliveries: list[tuple[Generation, Delivery]]) -> None:
        for generation, item in deliveries:
            generation.deliver(item)

    def _take_waiting(self) -> list[Generation]:
        if not self._waiting:
            # Read without the lock: a submit racing with this read is taken at the next step. It
            # spares every step a lock round-trip (0.6 % of a batch-8 step, measured).
            return []
        taken = []
        with self._wake:
            room = self.max_batch - len(self._rows)
            while self._waiting and len(self._waiting[0].spec.completions) <= room:
                generation = self._waiting.popleft()
                self._waiting_rows -= len(generation.spec.completions)
                if generation.cancelled:
                    continue
                room -= len(generation.spec.completions)
                taken.append(generation)
            self.stats.waiting = self._waiting_rows
        return taken

    def _admit(self) -> None:
        """Add waiting generations to the batch: short prompts as blank rows that read their prompt one
        token per step alongside everyone else (costing the others nothing), long ones by a
        dedicated prefill (one fast sequence kernel instead of hundreds of steps)."""
        generations = self._take_waiting()
        if not generations:
            return
        vocab = self.vocab.size
        new_logits, new_seen = [], []
        for generation in generations:
            copies = len(generation.spec.completions)
            if len(generation.spec.prompt_ids) < PREFILL_ONEDNN_MIN_TOKENS:
                self._decoder.add_blank(copies)
                logits = torch.zeros(vocab, device=self.device)  # unused until the prompt is read
                forced: Sequence[int] = generation.spec.prompt_ids
            else:
                logits, state = self._decoder.prefill(generation.spec.prompt_ids)
                self._decoder.add(state, copies)
                forced = ()
            seen = torch.zeros(vocab, dtype=torch.bool, device=self.device)
            seen[torch.tensor(generation.spec.prompt_ids, device=self.device)] = True
            new_logits.append(logits.expand(copies, -1))
            new_seen.append(seen.expand(copies, -1))
            generation.rows = [_Row(generation, spec, forced) for spec in generation.spec.completions]
            self._rows.extend(generation.rows)
            self._sampling_mix.update(spec.sampling for spec in generation.spec.completions)
            self._awaiting_first[id(generation)] = generation
        self._logits = torch.cat([self._logits, *new_logits])
        self._seen = torch.cat([self._seen, *new_seen])
        self._counts = torch.cat(
            [self._counts, torch.zeros(sum(len(g.spec.completions) for g in generations), vocab, device=self.device)]
        )
        self._refresh_controls()

    def _refresh_controls(self) -> None:
        if self.stream_messages_per_second > 0:
            streams = len({id(row.generation) for row in self._rows if row.generation.spec.incremental})
            self._stream_floor = streams / self.stream_messages_per_second
        if len(self._sampling_mix) == 1:
            (shared,) = self._sampling_mix
            if shared != self._shared_sampling:
                self._controls = BatchControls.of([shared], self.vocab.size, self.device)
                self._shared_sampling = shared
        else:
            self._shared_sampling = None
            self._controls = BatchControls.of([r.completion.sampling for r in self._rows], self.vocab.size, self.device)
        self.stats.active = len(self._rows)

    def _compact(self, leaving: Sequence[int], tokens: torch.Tensor) -> torch.Tensor:
        self._sampling_mix -= Counter(self._rows[i].completion.sampling for i in leaving)
        order = compaction_order(len(self._rows), leaving)
        index = torch.tensor(order, dtype=torch.long, device=self.device)
        self._decoder.keep(order)
        self._rows = [self._rows[i] for i in order]
        self._logits = self._logits.index_select(0, index)
        self._seen = self._seen.index_select(0, index)
        self._counts = self._counts.index_select(0, index)
        self._refresh_controls()
        return tokens.index_select(0, index)

    def _tick(self) -> None:
        self._admit()
        cancelled = [i for i, row in enumerate(self._rows) if row.generation.cancelled]
        if cancelled:
            for i in cancelled:
                self._awaiting_first.pop(id(self._rows[i].generation), None)
            self._compact(cancelled, torch.zeros(len(self._rows), dtype=torch.long, device=self.device))
        if not self._rows:
            self._flush(set())
            return
        started = time.perf_counter()
        rows = self._rows
        size = len(rows)
        # Rows still reading their prompt do not sample (and draw no random number); there are
        # few of them at a time, so they are handled row by row.
        reading = [i for i, row in enumerate(rows) if row.forced]
        uniforms = torch.from_numpy(
            np.fromiter((0.0 if row.forced else row.rng.random() for row in rows), np.float64, size)
        )
        tokens = choose_tokens(self._logits, self._controls, uniforms, self._seen, self._counts)
        if reading:
            sampling = [i for i, row in enumerate(rows) if not row.forced]
            sampling_index = torch.tensor(sampling, dtype=torch.long, device=self.device)
            inputs = tokens.clone()
            for i in reading:
                inputs[i] = rows[i].forced.popleft()
        else:
            sampling = list(range(size))
            sampling_index = torch.arange(size, device=self.device)
            inputs = tokens
        sampled = tokens.index_select(0, sampling_index)
        self._seen[sampling_index, sampled] = True
        self._counts[sampling_index, sampled] += 1
        finished: list[int] = []
        finishing: set[int] = set()  # generations with a completion that finished at this step
        unflushed = self._unflushed
        chars = self.vocab.chars
        ids = sampled.tolist()
        details = self._token_details(sampling, sampled, ids)
        for i, token_id, detail in zip(sampling, ids, details, strict=True):
            row = rows[i]
            generation = row.generation
            if row.advance(chars[token_id], detail):
                finished.append(i)
                finishing.add(id(generation))
                unflushed[id(generation)] = generation
            elif generation.spec.incremental:
                unflushed[id(generation)] = generation
        self._first_tokens()
        self._flush(finishing)
        self.stats.tokens += len(sampling)
        if finished:
            inputs = self._compact(finished, inputs)
        if self._rows:
            self._logits = self._decoder.step(inputs)
        self.stats.steps.append((time.perf_counter() - started, size))

    def _flush(self, finishing: set[int]) -> None:
        """Hand over what each generation may receive now: a finished completion at once, the rest at
        most once per max(the generation's flush interval, the stream budget's share per stream)."""
        now = time.perf_counter()
        deliveries: list[tuple[Generation, Delivery]] = []
        for key, generation in list(self._unflushed.items()):
            if generation.cancelled:
                del self._unflushed[key]
                continue
            interval = max(generation.spec.flush_interval, self._stream_floor)
            if key not in finishing and now - generation.last_flush < interval:
                continue
            updates = [update for row in generation.rows if (update := row.take_update()) is not None]
            if updates:
                deliveries.append((generation, updates))
            generation.last_flush = now
            del self._unflushed[key]
        if deliveries:
            self._dispatch(deliveries)
            if self.on_dispatched is not None:
                self.on_dispatched()

    def _first_tokens(self) -> None:
        if not self._awaiting_first:
            return
        now = time.perf_counter()
        # A generation's rows read the same prompt, so they sample their first tokens at the same step.
        for key, generation in list(self._awaiting_first.items()):
            if generation.rows[0].generated:
                del self._awaiting_first[key]
                self.stats.first_tokens.append(now - generation.submitted_at)

    def _token_details(self, sampling: list[int], tokens: torch.Tensor, ids: list[int]) -> list[TokenOut | None]:
        """Per sampling row: the token with its log-probabilities when its generation asked for them,
        else None (tokens is aligned with `sampling`)."""
        rows = [self._rows[i] for i in sampling]
        if not any(row.generation.spec.logprobs for row in rows):
            return [None] * len(rows)
        chars = self.vocab.chars
        logits = self._logits.index_select(0, torch.tensor(sampling, dtype=torch.long, device=self.device))
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        chosen = logprobs.gather(-1, tokens[:, None])[:, 0].tolist()
        k = max(row.generation.spec.top_logprobs for row in rows)
        top_values: list[list[float]] = []
        top_ids: list[list[int]] = []
        if k:
            values, indices = logprobs.topk(k, dim=-1)
            top_values, top_ids = values.tolist(), indices.tolist()
        details: list[TokenOut | None] = []
        for i, (row, token) in enumerate(zip(rows, ids, strict=True)):
            if not row.generation.spec.logprobs:
                details.append(None)
                continue
            n = row.generation.spec.top_logprobs
            top = tuple((chars[top_ids[i][j]], top_values[i][j]) for j in range(n)) if n else ()
            details.append(TokenOut(token, chars[token], chosen[i], top))
        return details
