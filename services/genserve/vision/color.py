"""Colour transforms for style transfer's colour preservation (Gatys et al., "Preserving Color in
Neural Artistic Style Transfer", 2016).

Every image here is rgb (B, 3, H, W) float in [0, 1]. YCbCr is the full-range BT.601 (JPEG)
variant: Y in [0, 1], Cb and Cr in [0, 1] centred on 0.5 (0.5 = no chroma). Pure tensor code,
usable on any device; statistics are computed in float64 so that near-singular colour
covariances (a grey image) stay stable.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Rows give Y, Cb, Cr as combinations of R, G, B (ITU-R BT.601, full range, as JPEG uses).
RGB_TO_YCBCR = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=torch.float64,
)
YCBCR_TO_RGB = torch.linalg.inv(RGB_TO_YCBCR)  # exact inverse, so rgb → YCbCr → rgb round-trips
CHROMA_OFFSET = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)
# Floor for variances and covariance eigenvalues (in [0, 1]² units): a flat image has none, and
# dividing by zero would blow its colours up; 1e-6 is a standard deviation of 0.001 (a quarter of
# one 8-bit level), far below anything visible.
VARIANCE_FLOOR = 1e-6


def _mix(image: Tensor, matrix: Tensor, offset: Tensor) -> Tensor:
    """Per-pixel affine colour map: out[c] = Σ_k matrix[c, k] · image[k] + offset[c]."""
    m = matrix.to(image.device, image.dtype)
    return torch.einsum("ck,bkhw->bchw", m, image) + offset.to(image.device, image.dtype).view(1, 3, 1, 1)


def rgb_to_ycbcr(rgb: Tensor) -> Tensor:
    """rgb (B, 3, H, W) in [0, 1] → YCbCr (B, 3, H, W): Y in [0, 1], Cb/Cr in [0, 1] around 0.5."""
    return _mix(rgb, RGB_TO_YCBCR, CHROMA_OFFSET)


def ycbcr_to_rgb(ycbcr: Tensor) -> Tensor:
    """YCbCr (B, 3, H, W) → rgb (B, 3, H, W); not clamped (a Y/chroma mix can leave the RGB gamut)."""
    offset = -(YCBCR_TO_RGB @ CHROMA_OFFSET)
    return _mix(ycbcr, YCBCR_TO_RGB, offset)


def luminance(rgb: Tensor) -> Tensor:
    """rgb (B, 3, H, W) → Y (B, 1, H, W) in [0, 1]."""
    return rgb_to_ycbcr(rgb)[:, :1]


def grey(y: Tensor) -> Tensor:
    """Y (B, 1, H, W) → rgb (B, 3, H, W) with R = G = B = Y, the input a luminance-only transfer feeds VGG."""
    return y.expand(-1, 3, -1, -1).contiguous()


def match_luminance(source_y: Tensor, target_y: Tensor) -> Tensor:
    """Shift and scale source_y (B, 1, H, W) so that its mean and standard deviation equal target_y's.

    Gatys et al.'s luminance matching: the style's luminance takes the content's brightness and
    contrast, so the transfer keeps the content's tonal range. Clamped to [0, 1].
    """
    s, t = source_y.double(), target_y.double()
    s_mean, t_mean = s.mean(dim=(1, 2, 3), keepdim=True), t.mean(dim=(1, 2, 3), keepdim=True)
    s_std = s.var(dim=(1, 2, 3), unbiased=False, keepdim=True).clamp_min(VARIANCE_FLOOR).sqrt()
    t_std = t.var(dim=(1, 2, 3), unbiased=False, keepdim=True).clamp_min(VARIANCE_FLOOR).sqrt()
    return ((s - s_mean) * (t_std / s_std) + t_mean).clamp(0.0, 1.0).to(source_y.dtype)


def color_statistics(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (3,) and covariance (3, 3) of the pixel colours of rgb (1, 3, H, W), in float64."""
    pixels = rgb[0].reshape(3, -1).double()  # (3, N)
    mean = pixels.mean(dim=1)
    centred = pixels - mean[:, None]
    return mean, centred @ centred.T / pixels.shape[1]


def _symmetric_power(matrix: Tensor, power: float) -> Tensor:
    """matrix^power for a symmetric positive semi-definite (3, 3) matrix, eigenvalues floored first."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp_min(VARIANCE_FLOOR) ** power) @ vectors.T


def match_color(source: Tensor, target: Tensor) -> Tensor:
    """Recolour source (1, 3, H, W) so that its colour mean and covariance equal target's (1, 3, h, w).

    The affine map x' = A (x - μs) + μt with A = Σt^½ Σs^-½ (symmetric square roots, the
    "image analogies" colour transfer Gatys et al. found to work best): it matches the first
    two moments of the 3-D colour distribution exactly and, among such maps, rotates colours the
    least. Clamped to [0, 1], which moves the statistics slightly where the map leaves the gamut.
    """
    source_mean, source_cov = color_statistics(source)
    target_mean, target_cov = color_statistics(target)
    transform = _symmetric_power(target_cov, 0.5) @ _symmetric_power(source_cov, -0.5)
    pixels = source[0].reshape(3, -1).double()
    mapped = transform @ (pixels - source_mean[:, None]) + target_mean[:, None]
    return mapped.reshape(source.shape).clamp(0.0, 1.0).to(source.dtype)


def with_chroma_of(rgb: Tensor, chroma_source: Tensor) -> Tensor:
    """rgb's luminance with chroma_source's Cb and Cr (both (B, 3, H, W)), back in rgb, clamped to [0, 1]."""
    ycbcr = rgb_to_ycbcr(chroma_source)
    ycbcr = torch.cat([luminance(rgb), ycbcr[:, 1:]], dim=1)
    return ycbcr_to_rgb(ycbcr).clamp(0.0, 1.0)
