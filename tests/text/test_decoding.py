"""Incremental batched decoding gives the logits a full forward pass gives, while rows join,
leave and (Transformer) outgrow the context window."""

from __future__ import annotations

import random

import pytest
import torch

from genserve.text.decoding import GPTBatch, LSTMBatch, compaction_order
from genserve.text.models import CharGPT, CharLSTM, GPTConfig, LSTMConfig

V = 20


def tiny_lstm() -> CharLSTM:
    torch.manual_seed(0)
    return CharLSTM(LSTMConfig(V, embed_dim=8, hidden_size=32, num_layers=2, dropout=0.0)).eval()


def tiny_gpt(block: int = 16) -> CharGPT:
    torch.manual_seed(0)
    return CharGPT(GPTConfig(V, block_size=block, n_layer=2, n_head=2, n_embd=32, dropout=0.0)).eval()


def test_compaction_moves_only_tail_rows_into_holes() -> None:
    assert compaction_order(5, [1]) == [0, 4, 2, 3]
    assert compaction_order(5, [4]) == [0, 1, 2, 3]
    assert compaction_order(6, [0, 5, 2]) == [3, 1, 4]
    assert compaction_order(3, [0, 1, 2]) == []


def full_logits(model: CharLSTM | CharGPT, tokens: list[int]) -> torch.Tensor:
    ids = torch.tensor([tokens])
    with torch.no_grad():
        out = model(ids)
    logits = out[0] if isinstance(out, tuple) else out
    return logits[0, -1]


def drive(batch: LSTMBatch | GPTBatch, model: CharLSTM | CharGPT, steps: int, window: int | None) -> None:
    """Rows join (prefilled or blank) and leave at random; every step's logits must match a full
    forward pass over the row's text."""
    rng = random.Random(0)
    sequences: list[list[int]] = []
    logits: list[torch.Tensor] = []
    for step in range(steps):
        if len(sequences) < 6 and rng.random() < 0.4:
            copies = rng.randint(1, 2)
            if rng.random() < 0.5:
                prompt = [rng.randrange(V) for _ in range(rng.randint(1, 9))]
                row_logits, state = batch.prefill(prompt)
                batch.add(state, copies)
            else:  # a blank row reads its prompt through the steps, like any other token
                prompt, row_logits = [], torch.zeros(V)
                batch.add_blank(copies)
            sequences.extend(list(prompt) for _ in range(copies))
            logits.extend(row_logits for _ in range(copies))
        if not sequences:
            continue
        leaving = [i for i in range(len(sequences)) if rng.random() < 0.1]
        if leaving:
            order = compaction_order(len(sequences), leaving)
            batch.keep(order)
            sequences = [sequences[i] for i in order]
            logits = [logits[i] for i in order]
            if not sequences:
                continue
        tokens = [rng.randrange(V) for _ in sequences]
        for seq in sequences:
            seq.append(0)  # placeholder, replaced below
        for seq, token in zip(sequences, tokens, strict=True):
            seq[-1] = token
        stepped = batch.step(torch.tensor(tokens))
        for row, seq in enumerate(sequences):
            context = seq if window is None else batch.histories[row]  # type: ignore[union-attr]
            if window is None:
                assert len(seq) <= 64
            expected = full_logits(model, context)
            assert torch.allclose(stepped[row], expected, atol=1e-4), (step, row)
        logits = list(stepped)


def test_lstm_batch_matches_full_forward() -> None:
    model = tiny_lstm()
    drive(LSTMBatch(model, torch.device("cpu")), model, steps=40, window=None)


def test_gpt_batch_matches_full_forward_within_the_block() -> None:
    model = tiny_gpt(block=64)
    drive(GPTBatch(model, torch.device("cpu"), capacity=16), model, steps=40, window=64)


def test_gpt_rows_longer_than_the_block_are_rebuilt_from_recent_tokens() -> None:
    model = tiny_gpt(block=16)
    batch = GPTBatch(model, torch.device("cpu"), capacity=16)
    drive(batch, model, steps=60, window=16)
    assert all(len(h) <= 16 for h in batch.histories)


@pytest.mark.parametrize("make", [tiny_lstm, tiny_gpt])
def test_prefill_logits_equal_full_forward(make: object) -> None:
    model = make()  # type: ignore[operator]
    batch = (
        LSTMBatch(model, torch.device("cpu"))
        if isinstance(model, CharLSTM)
        else GPTBatch(model, torch.device("cpu"), 4)
    )
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    logits, _ = batch.prefill(prompt)
    assert torch.allclose(logits, full_logits(model, prompt), atol=1e-5)
