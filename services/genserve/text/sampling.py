"""Choosing the next token of many sequences at once, each with its own sampling controls.

Pure torch, vectorised over the batch: every row carries its own temperature, top_k, top_p,
min_p and penalties, and draws with its own uniform number (from its own seeded generator), so
a row's draw does not depend on which other rows share the batch.

Order of operations (the same as common LLM servers): repetition/presence/frequency penalties on
the logits → temperature → top_k → top_p → min_p → inverse-CDF draw. Temperature 0 is greedy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from genserve.text.protocol import SamplingConfig


@dataclass(frozen=True)
class BatchControls:
    """Per-row controls as (B,) tensors, plus flags that let common cases skip work.

    Built from one config, the tensors have shape (1,) and broadcast over a batch of any size: a
    batch whose rows all share their controls keeps one such set while rows join and leave."""

    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    min_p: torch.Tensor
    repetition_penalty: torch.Tensor
    presence_penalty: torch.Tensor
    frequency_penalty: torch.Tensor
    all_greedy: bool
    any_top_k: bool
    any_top_p: bool
    any_min_p: bool
    any_repetition: bool
    any_count_penalty: bool

    @classmethod
    def of(cls, configs: Sequence[SamplingConfig], vocab_size: int, device: torch.device) -> BatchControls:
        """One config per row, or a single config that every row shares."""

        def column(values: Sequence[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        top_k = [c.top_k if 0 < c.top_k < vocab_size else vocab_size for c in configs]
        return cls(
            temperature=column([c.temperature for c in configs]),
            top_k=column(top_k, torch.long),
            top_p=column([c.top_p for c in configs], torch.float64),
            min_p=column([c.min_p for c in configs], torch.float64),
            repetition_penalty=column([c.repetition_penalty for c in configs]),
            presence_penalty=column([c.presence_penalty for c in configs]),
            frequency_penalty=column([c.frequency_penalty for c in configs]),
            all_greedy=all(c.temperature == 0 for c in configs),
            any_top_k=any(k < vocab_size for k in top_k),
            any_top_p=any(c.top_p < 1.0 for c in configs),
            any_min_p=any(c.min_p > 0.0 for c in configs),
            any_repetition=any(c.repetition_penalty != 1.0 for c in configs),
            any_count_penalty=any(c.presence_penalty != 0.0 or c.frequency_penalty != 0.0 for c in configs),
        )


def apply_penalties(
    logits: torch.Tensor, controls: BatchControls, seen: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """logits (B, V); seen (B, V) bool: token in prompt or completion; counts (B, V) float:
    occurrences in the completion. Returns penalised logits (B, V)."""
    if controls.any_repetition:
        penalty = controls.repetition_penalty[:, None]
        penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits = torch.where(seen, penalised, logits)
    if controls.any_count_penalty:
        logits = (
            logits - controls.presence_penalty[:, None] * (counts > 0) - controls.frequency_penalty[:, None] * counts
        )
    return logits


def filtered_distribution(logits: torch.Tensor, controls: BatchControls) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature and top_k/top_p/min_p applied to penalised logits (B, V).

    Returns (probs, order): float64 probabilities in descending order of the tempered logits,
    zero where filtered out (not renormalised), and the token id of each sorted position.
    Rows with temperature 0 are computed at temperature 1 (the caller takes their argmax).
    """
    temperature = torch.where(controls.temperature > 0, controls.temperature, torch.ones_like(controls.temperature))
    scaled = logits.double() / temperature.double()[:, None]
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    vocab = probs.shape[-1]
    keep = torch.ones_like(probs, dtype=torch.bool)
    if controls.any_top_k:
        keep &= torch.arange(vocab, device=probs.device)[None, :] < controls.top_k[:, None]
    if controls.any_top_p:
        # Keep the smallest prefix whose mass reaches top_p: a token stays while the mass
        # before it is still short of top_p (so the most likely token always stays).
        before = probs.cumsum(dim=-1) - probs
        keep &= (before < controls.top_p[:, None]) | (controls.top_p[:, None] >= 1.0)
    if controls.any_min_p:
        keep &= probs >= controls.min_p[:, None] * probs[:, :1]
    return probs * keep, order


def choose_tokens(
    logits: torch.Tensor,
    controls: BatchControls,
    uniforms: torch.Tensor,
    seen: torch.Tensor,
    counts: torch.Tensor,
) -> torch.Tensor:
    """Next token id per row (B,), given raw logits (B, V) and one uniform in [0, 1) per row."""
    logits = apply_penalties(logits.float(), controls, seen, counts)
    greedy = logits.argmax(dim=-1)
    if controls.all_greedy:
        return greedy
    probs, order = filtered_distribution(logits, controls)
    cdf = probs.cumsum(dim=-1)
    target = uniforms.double().to(cdf.device) * cdf[:, -1]
    position = torch.searchsorted(cdf, target[:, None], right=True).clamp_(max=cdf.shape[-1] - 1)
    sampled = order.gather(-1, position)[:, 0]
    return torch.where(controls.temperature > 0, sampled, greedy)
