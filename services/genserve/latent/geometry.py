"""Latent-space geometry: prior samples with temperature and truncation, lerp and slerp, the manifold grid.

Pure tensor functions on the CPU; every random draw takes its own generator, so a request's
points depend only on its seed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TRUNCATION_REDRAWS = 64  # |z| > t has probability ≤ 0.92 at t = 0.1: 64 redraws leave < 1e-2 of a component


def sample_prior(n: int, dim: int, seed: int, temperature: float = 1.0, truncation: float = 0.0) -> Tensor:
    """n points from N(0, temperature² I), (n, dim) float32; with truncation t > 0, every component with
    |z| > t (before scaling) is redrawn until it falls inside (the last stragglers are clamped).
    """
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=generator)
    if truncation > 0:
        for _ in range(TRUNCATION_REDRAWS):
            outside = z.abs() > truncation
            if not outside.any():
                break
            z = torch.where(outside, torch.randn(n, dim, generator=generator), z)
        z = z.clamp(-truncation, truncation)
    return z * temperature


def lerp(start: Tensor, end: Tensor, steps: int) -> Tensor:
    """steps points on the segment from start to end (both (dim,)), ends included: (steps, dim)."""
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)[:, None]
    return ((1 - t) * start.double() + t * end.double()).float()


def slerp(start: Tensor, end: Tensor, steps: int) -> Tensor:
    """steps points from start to end along the great circle between their directions, the norm
    interpolated linearly (ends included, exact): (steps, dim). Parallel or zero vectors fall back
    to the straight line, where the great circle is undefined.
    """
    a, b = start.double(), end.double()
    norm_a, norm_b = a.norm(), b.norm()
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)[:, None]
    if norm_a < 1e-12 or norm_b < 1e-12:
        return lerp(start, end, steps)
    unit_a, unit_b = a / norm_a, b / norm_b
    angle = torch.arccos((unit_a @ unit_b).clamp(-1.0, 1.0))
    if float(angle) < 1e-6 or float(angle) > math.pi - 1e-6:
        return lerp(start, end, steps)
    direction = (torch.sin((1 - t) * angle) * unit_a + torch.sin(t * angle) * unit_b) / torch.sin(angle)
    points = direction * ((1 - t) * norm_a + t * norm_b)
    points[0], points[-1] = a, b
    return points.float()


def manifold_points(grid_size: int, quantile: float) -> Tensor:
    """The 2-d grid over the prior's quantiles quantile .. 1 - quantile, row-major from the top left:
    (grid_size², 2), x along the rows' width, y growing upwards (as the classic manifold figure).
    """
    normal = torch.distributions.Normal(0.0, 1.0)
    values = normal.icdf(torch.linspace(quantile, 1 - quantile, grid_size, dtype=torch.float64)).float()
    ys, xs = torch.meshgrid(values.flip(0), values, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def tile(images: Tensor, grid_size: int) -> Tensor:
    """(grid_size², C, h, w) → one (C, grid_size·h, grid_size·w) image, row-major."""
    count, channels, height, width = images.shape
    assert count == grid_size * grid_size
    rows = images.reshape(grid_size, grid_size, channels, height, width)
    return rows.permute(2, 0, 3, 1, 4).reshape(channels, grid_size * height, grid_size * width)
