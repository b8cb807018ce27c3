"""How `genserve train ...` shows a training run: the plan in one line, then a progress bar (a log
file, which is no terminal, gets a line every 100 steps instead). The runs themselves print nothing;
these observers are what the CLI hands them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

if TYPE_CHECKING:  # for annotations only: a text run need not import the latent family
    from genserve.latent.train_run import LatentTrainingPlan
    from genserve.text.train_run import TextTrainingPlan

LOG_EVERY = 100  # steps between log lines when the output is not a terminal


def _progress_bar(console: Console, fields: str) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn(fields),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


class _TrainingProgress:
    """A progress bar for a training run, and a plain line every LOG_EVERY steps when the output is
    not a terminal (a log file keeps the numbers the bar would have shown). `fields` formats the
    run's losses beside the bar."""

    def __init__(self, console: Console, fields: str) -> None:
        self.console = console
        self.progress = _progress_bar(console, fields)
        self.task = TaskID(0)
        self.started_at = time.monotonic()

    def _begin(self, summary: str, total: int | None, **fields: float) -> None:
        self.console.print(summary)
        self.started_at = time.monotonic()
        self.progress.start()
        self.task = self.progress.add_task("training", total=total, **fields)  # type: ignore[arg-type]

    def _advance(self, completed: int, total: int, values: dict[str, float], line: str) -> None:
        """Move the bar to `completed` of `total`; off a terminal, log `line` every LOG_EVERY steps."""
        self.progress.update(self.task, completed=completed, total=total, **values)  # type: ignore[arg-type]
        if not self.console.is_terminal and completed % LOG_EVERY == 0:
            self.console.print(f"step {completed}/{total} {line} {time.monotonic() - self.started_at:.0f}s")

    def finished(self) -> None:
        self.progress.stop()


class TextProgress(_TrainingProgress):
    """Observer of a text training run of `steps` optimiser steps."""

    def __init__(self, console: Console, steps: int) -> None:
        super().__init__(console, "loss {task.fields[loss]:.3f} · lr {task.fields[lr]:.2e}")
        self.steps = steps

    def started(self, plan: TextTrainingPlan) -> None:
        summary = (
            f"[bold]{plan.architecture}[/] {plan.parameters:,} parameters · vocab {plan.vocab_size} · "
            f"train {plan.train_characters:,} chars ({plan.train_texts} texts) · "
            f"validation {plan.validation_characters:,} chars ({', '.join(plan.validation_texts)}) · "
            f"{plan.device} · bf16 {'on' if plan.bf16 else 'off'}"
        )
        self._begin(summary, self.steps, loss=float("nan"), lr=0.0)

    def step(self, step: int, loss: float, rate: float) -> None:
        self._advance(step + 1, self.steps, {"loss": loss, "lr": rate}, f"loss {loss:.4f} lr {rate:.2e}")


class LatentProgress(_TrainingProgress):
    """Observer of a latent training run; `fields` formats the loop's losses beside the bar."""

    def started(self, plan: LatentTrainingPlan) -> None:
        summary = (
            f"[bold]{plan.model_name}[/] {plan.architecture} · {plan.parameters:,} parameters · {plan.dataset} "
            f"train {plan.train_images:,} / test {plan.test_images:,} · {plan.epochs} epochs of batch "
            f"{plan.batch_size} · {plan.threads} threads"
        )
        self._begin(summary, None, loss=float("nan"), kl=float("nan"), d_loss=0.0, g_loss=0.0)

    def step(self, step: int, total: int, values: dict[str, float]) -> None:
        self._advance(step, total, values, " ".join(f"{key} {value:.4g}" for key, value in values.items()))
