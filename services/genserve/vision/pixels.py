"""Image tensors shared by DeepDream and style transfer: the input check and the resize both use."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from genserve.common.errors import InvalidArgument


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, C, h, w) to size; antialiased when shrinking."""
    if tuple(image.shape[-2:]) == size:
        return image
    shrinking = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def check_rgb_batch(field: str, image: Tensor) -> None:
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3 or not image.is_floating_point():
        raise InvalidArgument(f"{field} must be a float RGB tensor of shape (1, 3, H, W), got {tuple(image.shape)}")
    if min(image.shape[-2:]) < 1:
        raise InvalidArgument(f"{field} is empty: {tuple(image.shape)}")
