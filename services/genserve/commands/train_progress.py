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


class TextProgress:
    """Observer of a text training run of `steps` optimiser steps."""

    def __init__(self, console: Console, steps: int) -> None:
        self.console = console
        self.steps = steps
        self.progress = _progress_bar(console, "loss {task.fields[loss]:.3f} · lr {task.fields[lr]:.2e}")
        self.task = TaskID(0)
        self.started_at = time.monotonic()

    def started(self, plan: TextTrainingPlan) -> None:
        self.console.print(
            f"[bold]{plan.architecture}[/] {plan.parameters:,} parameters · vocab {plan.vocab_size} · "
            f"train {plan.train_characters:,} chars ({plan.train_texts} texts) · "
            f"validation {plan.validation_characters:,} chars ({', '.join(plan.validation_texts)}) · "
            f"{plan.device} · bf16 {'on' if plan.bf16 else 'off'}"
        )
        self.started_at = time.monotonic()
        self.progress.start()
        self.task = self.progress.add_task("training", total=self.steps, loss=float("nan"), lr=0.0)

    def step(self, step: int, loss: float, rate: float) -> None:
        self.progress.update(self.task, completed=step + 1, loss=loss, lr=rate)
        if not self.console.is_terminal and (step + 1) % LOG_EVERY == 0:
            self.console.print(
                f"step {step + 1}/{self.steps} loss {loss:.4f} lr {rate:.2e} {time.monotonic() - self.started_at:.0f}s"
            )

    def finished(self) -> None:
        self.progress.stop()


class LatentProgress:
    """Observer of a latent training run; `fields` formats the loop's losses beside the bar."""

    def __init__(self, console: Console, fields: str) -> None:
        self.console = console
        self.progress = _progress_bar(console, fields)
        self.task = TaskID(0)
        self.started_at = time.monotonic()

    def started(self, plan: LatentTrainingPlan) -> None:
        self.console.print(
            f"[bold]{plan.model_name}[/] {plan.architecture} · {plan.parameters:,} parameters · {plan.dataset} "
            f"train {plan.train_images:,} / test {plan.test_images:,} · {plan.epochs} epochs of batch "
            f"{plan.batch_size} · {plan.threads} threads"
        )
        self.started_at = time.monotonic()
        self.progress.start()
        self.task = self.progress.add_task(
            "training", total=None, loss=float("nan"), kl=float("nan"), d_loss=0.0, g_loss=0.0
        )

    def step(self, step: int, total: int, values: dict[str, float]) -> None:
        self.progress.update(self.task, completed=step, total=total, **values)  # type: ignore[arg-type]
        if not self.console.is_terminal and step % LOG_EVERY == 0:
            shown = " ".join(f"{key} {value:.4g}" for key, value in values.items())
            self.console.print(f"step {step}/{total} {shown} {time.monotonic() - self.started_at:.0f}s")

    def finished(self) -> None:
        self.progress.stop()
