"""Incremental decoding of many sequences in one batch, rows joining and leaving at any step.

A `BatchDecoder` holds the per-row model state (LSTM hidden/cell, or the Transformer's
key/value cache) for rows 0..size-1. `prefill` reads a new prompt on its own and returns its
next-token logits and state; `add` appends that state as one or more rows; `step` advances every
row by one token; `keep` compacts the batch after rows finish, moving as few rows as possible.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from genserve.text.models import CharGPT, CharLSTM, LanguageModel

# Kernel choice, measured on this project's 2-core AVX-512 machines (bench notes in the README):
# a one-token LSTM step is faster on plain ATen kernels than on oneDNN at every batch size up to
# 128 (0.57 vs 2.0 ms at batch 1, 2.4 vs 2.9 ms at 32), while reading a prompt of 128+ tokens is
# 2.5-3x faster on oneDNN. So prompts of at least PREFILL_ONEDNN_MIN_TOKENS use oneDNN, and
# decoding steps use it only from `onednn_min_batch` rows up (0 = never; configurable, since
# the crossover depends on the CPU).
PREFILL_ONEDNN_MIN_TOKENS = 16
DEFAULT_ONEDNN_MIN_BATCH = 0


@contextlib.contextmanager
def kernel_choice(rows: int, tokens_per_row: int, onednn_min_batch: int = DEFAULT_ONEDNN_MIN_BATCH) -> Iterator[None]:
    """Pick oneDNN or plain ATen kernels for a forward pass over rows × tokens_per_row."""
    wanted = tokens_per_row >= PREFILL_ONEDNN_MIN_TOKENS or (0 < onednn_min_batch <= rows)
    previous = torch.backends.mkldnn.enabled
    if previous != wanted:
        torch.backends.mkldnn.enabled = wanted  # type: ignore[assignment]  # process-wide flag
    try:
        yield
    finally:
        if previous != wanted:
            torch.backends.mkldnn.enabled = previous  # type: ignore[assignment]


def compaction_order(size: int, finished: Sequence[int]) -> list[int]:
    """Row order after dropping `finished` rows: new row i is old row order[i].

    Holes left below the new size are filled with surviving rows from the tail, so at most
    len(finished) rows move and every other row keeps its place.
    """
    gone = set(finished)
    new_size = size - len(gone)
    order = list(range(new_size))
    holes = [i for i in range(new_size) if i in gone]
    movers = [i for i in range(new_size, size) if i not in gone]
    for hole, mover in zip(holes, movers, strict=True):
        order[hole] = mover
    return order


class RowState(Protocol):
    """Model state of one prefilled prompt, ready to become one or more batch rows."""


class BatchDecoder(Protocol):
    size: int

    def prefill(self, prompt: Sequence[int]) -> tuple[torch.Tensor, RowState]:
        """Read a prompt; return its next-token logits (V,) and its state."""
        ...

    def add(self, state: RowState, copies: int) -> None: ...

    def add_blank(self, copies: int) -> None:
        """Rows that have read nothing yet (their prompt is fed through `step`)."""
        ...

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (size,); return next-token logits (size, V)."""
        ...

    def keep(self, order: Sequence[int]) -> None:
        """Reorder/shrink rows: new row i is old row order[i] (see compaction_order)."""
        ...


@dataclass
class LSTMRow:
    h: torch.Tensor  # (layers, 1, H)
    c: torch.Tensor


class LSTMBatch:
    def __init__(self, model: CharLSTM, device: torch.device, onednn_min_batch: int = DEFAULT_ONEDNN_MIN_BATCH) -> None:
        self.model = model
        self.device = device
        self.onednn_min_batch = onednn_min_batch
        layers, hidden = model.config.num_layers, model.config.hidden_size
        self.h = torch.zeros(layers, 0, hidden, device=device)
        self.c = torch.zeros(layers, 0, hidden, device=device)
        self.size = 0

    @torch.inference_mode()
    def prefill(self, prompt: Sequence[int]) -> tuple[torch.Tensor, LSTMRow]:
        ids = torch.tensor([list(prompt)], dtype=torch.long, device=self.device)
        with kernel_choice(1, ids.shape[1], self.onednn_min_batch):
            logits, (h, c) = self.model(ids)
        return logits[0, -1], LSTMRow(h, c)

    def add_blank(self, copies: int) -> None:
        layers, _, hidden = self.h.shape
        zeros = torch.zeros(layers, 1, hidden, device=self.device)
        self.add(LSTMRow(zeros, zeros), copies)

    def add(self, state: RowState, copies: int) -> None:
        assert isinstance(state, LSTMRow)
        self.h = torch.cat([self.h, state.h.expand(-1, copies, -1)], dim=1)
        self.c = torch.cat([self.c, state.c.expand(-1, copies, -1)], dim=1)
        self.size += copies

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        with kernel_choice(self.size, 1, self.onednn_min_batch):
            logits, (self.h, self.c) = self.model(tokens[:, None], (self.h, self.c))
        return logits[:, 0, :]

    def keep(self, order: Sequence[int]) -> None:
        index = torch.tensor(order, dtype=torch.long, device=self.device)
        self.h = self.h.index_select(1, index)
        self.c = self.c.index_select(1, index)
        self.size = len(order)


@dataclass
class GPTRow:
    keys: torch.Tensor  # (layers, nh, T, hs)
    values: torch.Tensor
    history: list[int]  # the T tokens in the cache


class GPTBatch:
    """Key/value cache preallocated for `capacity` rows of `block_size` positions.

    A row whose cache is full is rebuilt from its last block_size/2 tokens before its next
    step (the model never attends beyond block_size, as in training).
    """

    def __init__(
        self, model: CharGPT, device: torch.device, capacity: int, onednn_min_batch: int = DEFAULT_ONEDNN_MIN_BATCH
    ) -> None:
        self.model = model
        self.device = device
        self.onednn_min_batch = onednn_min_batch
        cfg = model.config
        self.block = cfg.block_size
        shape = (cfg.n_layer, capacity, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.keys = torch.zeros(shape, device=device)
        self.values = torch.zeros(shape, device=device)
        self.positions = torch.zeros(0, dtype=torch.long, device=device)
        self.histories: list[list[int]] = []
        self.size = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[1]

    @torch.inference_mode()
    def prefill(self, prompt: Sequence[int]) -> tuple[torch.Tensor, GPTRow]:
        history = list(prompt)[-self.block :]
        ids = torch.tensor([history], dtype=torch.long, device=self.device)
        with kernel_choice(1, len(history), self.onednn_min_batch):
            logits, cache = self.model.forward_with_cache(ids)
        keys = torch.stack([k[0] for k, _ in cache])
        values = torch.stack([v[0] for _, v in cache])
        return logits[0, -1], GPTRow(keys, values, history)

    def add_blank(self, copies: int) -> None:
        layers, _, heads, _, head_size = self.keys.shape
        empty = torch.zeros(layers, heads, 0, head_size, device=self.device)
        self.add(GPTRow(empty, empty, []), copies)

    def add(self, state: RowState, copies: int) -> None:
        assert isinstance(state, GPTRow)
        if self.size + copies > self.capacity:
            raise RuntimeError(f"batch capacity {self.capacity} exceeded")
        length = state.keys.shape[2]
        rows = slice(self.size, self.size + copies)
        self.keys[:, rows, :, :length] = state.keys[:, None]
        self.values[:, rows, :, :length] = state.values[:, None]
        start = torch.full((copies,), length, dtype=torch.long, device=self.device)
        self.positions = torch.cat([self.positions, start])
        self.histories.extend(list(state.history) for _ in range(copies))
        self.size += copies

    def _rebuild_full_rows(self) -> None:
        for row in (self.positions >= self.block).nonzero().flatten().tolist():
            recent = self.histories[row][-(self.block // 2) :]
            _, state = self.prefill(recent)
            length = state.keys.shape[2]
            self.keys[:, row, :, :length] = state.keys
            self.values[:, row, :, :length] = state.values
            self.positions[row] = length
            self.histories[row] = recent

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self._rebuild_full_rows()
        for row, token in enumerate(tokens.tolist()):
            self.histories[row].append(token)
        with kernel_choice(self.size, 1, self.onednn_min_batch):
            logits = self.model.step(tokens, self.positions, self.keys, self.values)
        self.positions += 1
        return logits

    def keep(self, order: Sequence[int]) -> None:
        for new, old in enumerate(order):
            if new != old:
                self.keys[:, new] = self.keys[:, old]
                self.values[:, new] = self.values[:, old]
        index = torch.tensor(order, dtype=torch.long, device=self.device)
        self.positions = self.positions.index_select(0, index)
        self.histories = [self.histories[i] for i in order]
        self.size = len(order)


def batch_decoder(
    model: LanguageModel, device: torch.device, capacity: int, onednn_min_batch: int = DEFAULT_ONEDNN_MIN_BATCH
) -> BatchDecoder:
    if isinstance(model, CharLSTM):
        return LSTMBatch(model, device, onednn_min_batch)
    return GPTBatch(model, device, capacity, onednn_min_batch)
