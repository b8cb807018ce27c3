"""The sampling math: greedy, temperature, filters, penalties, and the draw itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from genserve.text.sampling import (
    BatchControls,
    SamplingConfig,
    apply_penalties,
    choose_tokens,
    filtered_distribution,
)

V = 12


def controls(*configs: SamplingConfig) -> BatchControls:
    return BatchControls.of(list(configs), V, torch.device("cpu"))


def empty_history(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(rows, V, dtype=torch.bool), torch.zeros(rows, V)


def test_temperature_zero_is_argmax_whatever_the_uniform() -> None:
    logits = torch.randn(5, V, generator=torch.Generator().manual_seed(0))
    seen, counts = empty_history(5)
    for u in (0.0, 0.5, 0.999):
        tokens = choose_tokens(
            logits, controls(*[SamplingConfig(temperature=0.0)] * 5), torch.full((5,), u), seen, counts
        )
        assert tokens.tolist() == logits.argmax(-1).tolist()


def test_top_k_one_equals_greedy_at_any_temperature() -> None:
    logits = torch.randn(4, V, generator=torch.Generator().manual_seed(1))
    seen, counts = empty_history(4)
    for u in np.linspace(0, 0.999, 7):
        tokens = choose_tokens(
            logits,
            controls(*[SamplingConfig(temperature=1.7, top_k=1)] * 4),
            torch.full((4,), float(u)),
            seen,
            counts,
        )
        assert tokens.tolist() == logits.argmax(-1).tolist()


def test_draws_at_temperature_one_follow_the_softmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -2.0, 0.3, 0.2, 0.1, -0.5, 1.5, -3.0]])
    rng = np.random.default_rng(7)
    draws = 20000
    uniforms = torch.from_numpy(rng.random(draws))
    batch = logits.expand(draws, V)
    seen, counts = empty_history(draws)
    tokens = choose_tokens(batch, controls(*[SamplingConfig()] * draws), uniforms, seen, counts)
    observed = np.bincount(tokens.numpy(), minlength=V)
    expected = torch.softmax(logits[0].double(), -1).numpy() * draws
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_temperature_reweights_as_softmax_of_scaled_logits() -> None:
    logits = torch.tensor([[1.0, 0.0, -1.0] + [-30.0] * (V - 3)])
    for temperature in (0.5, 2.0):
        probs, order = filtered_distribution(logits, controls(SamplingConfig(temperature=temperature)))
        by_token = torch.zeros(V, dtype=torch.float64).scatter(0, order[0], probs[0])
        assert torch.allclose(by_token, torch.softmax(logits[0].double() / temperature, -1))


def test_top_p_keeps_the_smallest_nucleus_reaching_p() -> None:
    # probabilities 0.5, 0.3, 0.2 (and ~0 for the rest)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2] + [1e-12] * (V - 3)]))
    for top_p, kept in ((0.5, 1), (0.6, 2), (0.8, 2), (0.81, 3), (1.0, V)):
        probs, _ = filtered_distribution(logits, controls(SamplingConfig(top_p=top_p)))
        assert int((probs[0] > 0).sum()) == kept, top_p


def test_min_p_drops_tokens_below_a_fraction_of_the_best() -> None:
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.1, 0.05] + [0.15 / (V - 4)] * (V - 4)]))
    probs, _ = filtered_distribution(logits, controls(SamplingConfig(min_p=0.5)))
    assert int((probs[0] > 0).sum()) == 2  # 0.4 and 0.3 ≥ 0.2


def test_top_k_keeps_k_tokens() -> None:
    logits = torch.randn(1, V, generator=torch.Generator().manual_seed(3))
    probs, order = filtered_distribution(logits, controls(SamplingConfig(top_k=3)))
    kept = set(order[0][probs[0] > 0].tolist())
    assert kept == set(logits[0].topk(3).indices.tolist())


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0] + [0.0] * (V - 4)])
    seen = torch.zeros(1, V, dtype=torch.bool)
    seen[0, :2] = True
    out = apply_penalties(logits, controls(SamplingConfig(repetition_penalty=2.0)), seen, torch.zeros(1, V))
    assert out[0, :4].tolist() == [1.0, -4.0, 2.0, -2.0]


def test_presence_and_frequency_penalties_subtract_per_occurrence() -> None:
    logits = torch.zeros(1, V)
    counts = torch.zeros(1, V)
    counts[0, 0], counts[0, 1] = 3, 1
    out = apply_penalties(
        logits,
        controls(SamplingConfig(presence_penalty=0.5, frequency_penalty=0.25)),
        torch.zeros(1, V, dtype=torch.bool),
        counts,
    )
    assert out[0, :3].tolist() == pytest.approx([-0.5 - 0.75, -0.5 - 0.25, 0.0])


def test_each_row_draws_from_its_own_controls_and_uniform() -> None:
    """A row's token depends only on its own logits, controls and uniform, not its neighbours."""
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(6, V, generator=gen)
    configs = [
        SamplingConfig(temperature=t, top_k=k, top_p=p)
        for t, k, p in [
            (0.0, 0, 1.0),
            (1.0, 0, 1.0),
            (0.7, 3, 1.0),
            (1.3, 0, 0.9),
            (1.0, 5, 0.5),
            (2.0, 0, 1.0),
        ]
    ]
    uniforms = torch.rand(6, generator=gen, dtype=torch.float64)
    seen, counts = empty_history(6)
    together = choose_tokens(logits, controls(*configs), uniforms, seen, counts)
    for i in range(6):
        alone = choose_tokens(logits[i : i + 1], controls(configs[i]), uniforms[i : i + 1], seen[:1], counts[:1])
        assert int(alone[0]) == int(together[i])


def test_one_shared_set_of_controls_draws_as_one_set_per_row() -> None:
    """A batch whose rows share their controls keeps one (1,)-shaped set; it must draw exactly
    what one copy per row draws, every control and penalty in play."""
    gen = torch.Generator().manual_seed(9)
    rows = 7
    logits = torch.randn(rows, V, generator=gen)
    uniforms = torch.rand(rows, generator=gen, dtype=torch.float64)
    seen = torch.rand(rows, V, generator=gen) < 0.3
    counts = torch.randint(0, 3, (rows, V), generator=gen).float()
    config = SamplingConfig(
        temperature=0.8, top_k=6, top_p=0.9, min_p=0.05, repetition_penalty=1.3, presence_penalty=0.2,
        frequency_penalty=0.1,
    )  # fmt: skip
    shared = choose_tokens(logits, controls(config), uniforms, seen, counts)
    per_row = choose_tokens(logits, controls(*[config] * rows), uniforms, seen, counts)
    assert shared.tolist() == per_row.tolist()
    assert len(set(shared.tolist())) > 1  # the rows did draw differently
