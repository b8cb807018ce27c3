"""What a decoding engine reports, buffered where it runs and applied where /metrics is served.

The engine runs in the decode process; Prometheus is served by the gRPC process. The
engine records into a `StatsBuffer`; the decode process ships it with each batch of updates, and the
gRPC process applies it to its `Metrics` (every observation kept, so histograms stay exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from genserve.common.metrics import Metrics


@dataclass
class StatsBuffer:
    model: str
    tokens: int = 0
    steps: list[tuple[float, int]] = field(default_factory=list)  # (seconds, rows) per step
    first_tokens: list[float] = field(default_factory=list)  # seconds from submit to first token
    active: int | None = None  # latest batch occupancy, None = unchanged
    waiting: int | None = None  # latest wait-queue length, None = unchanged

    def drain(self) -> StatsBuffer | None:
        """Hand over what was recorded since the last drain (None if nothing)."""
        if not (self.tokens or self.steps or self.first_tokens) and self.active is None and self.waiting is None:
            return None
        taken = StatsBuffer(self.model, self.tokens, self.steps, self.first_tokens, self.active, self.waiting)
        self.tokens, self.steps, self.first_tokens, self.active, self.waiting = 0, [], [], None, None
        return taken

    def apply_to(self, metrics: Metrics) -> None:
        model = self.model
        if self.tokens:
            metrics.tokens_generated.labels(model).inc(self.tokens)
        for seconds, rows in self.steps:
            metrics.text_step_seconds.labels(model).observe(seconds)
            metrics.text_batch_size.labels(model).observe(rows)
        for seconds in self.first_tokens:
            metrics.text_time_to_first_token_seconds.labels(model).observe(seconds)
        if self.active is not None:
            metrics.text_active_sequences.labels(model).set(self.active)
        if self.waiting is not None:
            metrics.text_waiting_sequences.labels(model).set(self.waiting)
