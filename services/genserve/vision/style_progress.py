"""What the style engine reports: the loss terms of an image and the progress after each step."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StyleLosses:
    """The weighted loss terms of one image; total = content + style + tv."""

    content: float
    style: float
    tv: float
    total: float


@dataclass(frozen=True)
class StyleProgress:
    """Reported after every step.

    step: steps done so far over all scales (1 after the first); total_steps = params.iterations.
    content, style, tv, total: the weighted loss terms evaluated by this step, i.e. of the image
        the step started from (the optimiser evaluates, then moves), so they lag the image by
        one update; `StyleTransfer.losses()` evaluates the current image.
    elapsed_seconds: wall time spent in `run` so far, over every run of this job (restored by
        `load_state`).
    """

    step: int
    total_steps: int
    content: float
    style: float
    tv: float
    total: float
    elapsed_seconds: float
