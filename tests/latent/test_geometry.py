"""Latent geometry: prior draws, lerp and slerp, the manifold grid."""

from __future__ import annotations

import math

import pytest
import torch

from genserve.latent.geometry import lerp, manifold_points, sample_prior, slerp, tile


def test_prior_draws_follow_the_seed_temperature_and_truncation() -> None:
    first = sample_prior(500, 16, seed=4)
    assert torch.equal(first, sample_prior(500, 16, seed=4)) and not torch.equal(first, sample_prior(500, 16, seed=5))
    assert abs(float(first.mean())) < 0.05 and abs(float(first.std()) - 1) < 0.05
    assert abs(float(sample_prior(500, 16, seed=4, temperature=0.5).std()) - 0.5) < 0.03
    truncated = sample_prior(500, 16, seed=4, truncation=0.5)
    assert float(truncated.abs().max()) <= 0.5
    assert float(truncated.std()) > 0.25  # redrawn inside the bound, not piled up on it
    assert float((truncated.abs() == 0.5).double().mean()) < 0.01


def test_slerp_keeps_the_ends_and_interpolates_the_norm_linearly() -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, generator=generator) * 2, torch.randn(16, generator=generator)
    path = slerp(a, b, 7)
    assert path.shape == (7, 16)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    expected_norms = torch.linspace(float(a.norm()), float(b.norm()), 7)
    torch.testing.assert_close(path.norm(dim=1), expected_norms, atol=1e-5, rtol=1e-5)
    # Equal angles between neighbours: it moves along the great circle at constant speed.
    units = path / path.norm(dim=1, keepdim=True)
    angles = torch.arccos((units[1:] * units[:-1]).sum(1).clamp(-1, 1))
    torch.testing.assert_close(angles, angles.mean().expand_as(angles), atol=1e-4, rtol=0)


def test_lerp_is_the_straight_line_and_slerp_falls_back_to_it_for_parallel_ends() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.0])
    torch.testing.assert_close(lerp(a, b, 3), torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]))
    torch.testing.assert_close(slerp(a, b, 3), lerp(a, b, 3))
    torch.testing.assert_close(slerp(torch.zeros(2), b, 3), lerp(torch.zeros(2), b, 3))


@pytest.mark.parametrize("size", [2, 5])
def test_the_manifold_grid_spans_the_prior_quantiles(size: int) -> None:
    points = manifold_points(size, 0.05)
    edge = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.95)))
    assert points.shape == (size * size, 2)
    assert math.isclose(float(points[0, 0]), -edge, rel_tol=1e-5) and math.isclose(
        float(points[0, 1]), edge, rel_tol=1e-5
    )
    assert math.isclose(float(points[-1, 0]), edge, rel_tol=1e-5) and math.isclose(
        float(points[-1, 1]), -edge, rel_tol=1e-5
    )


def test_tiles_are_laid_out_row_major() -> None:
    images = torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 1, 2, 2)
    grid = tile(images, 2)
    assert grid.shape == (1, 4, 4)
    assert grid[0, 0, 0] == 0 and grid[0, 0, 2] == 1 and grid[0, 2, 0] == 2 and grid[0, 3, 3] == 3
