"""Measurable properties of digit images, for attribute concept vectors and for checking edits.

Images are (N, 1, 28, 28) or (N, 28, 28) intensities in [0, 1], light strokes on black.
"""

from __future__ import annotations

import torch
from torch import Tensor

INK = 0.5  # a pixel at least this bright is stroke


def _flat(images: Tensor) -> Tensor:
    return images.reshape(images.shape[0], images.shape[-2], images.shape[-1]).double()


def thickness(images: Tensor) -> Tensor:
    """Stroke thickness in pixels, (N,): twice the ink area over the ink's outline length.

    A stroke of width w and length L covers about w·L pixels and has an outline of about 2·L, so
    this is w whatever the digit's size or how long its strokes are. The outline counts ink pixels
    (≥ INK) with a non-ink 4-neighbour.
    """
    ink = _flat(images) >= INK
    padded = torch.nn.functional.pad(ink[:, None].double(), (1, 1, 1, 1))[:, 0] > 0
    inner = padded[:, 1:-1, 1:-1]
    surrounded = inner & padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    area = ink.double().sum(dim=(1, 2))
    outline = (ink & ~surrounded).double().sum(dim=(1, 2))
    return 2 * area / outline.clamp_min(1.0)


def slant(images: Tensor) -> Tensor:
    """Slant, (N,): the shear dx/dy of the ink's second moments; > 0 leans right (top to the right)."""
    ink = _flat(images)
    height, width = ink.shape[-2:]
    ys = torch.arange(height, dtype=torch.float64)[None, :, None].expand_as(ink)
    xs = torch.arange(width, dtype=torch.float64)[None, None, :].expand_as(ink)
    total = ink.sum(dim=(1, 2)).clamp_min(1e-9)
    mean_x = (ink * xs).sum(dim=(1, 2)) / total
    mean_y = (ink * ys).sum(dim=(1, 2)) / total
    dx, dy = xs - mean_x[:, None, None], ys - mean_y[:, None, None]
    covariance = (ink * dx * dy).sum(dim=(1, 2)) / total
    variance_y = (ink * dy * dy).sum(dim=(1, 2)) / total
    return -covariance / variance_y.clamp_min(1e-9)  # image rows grow downwards: flip to "leans right"
