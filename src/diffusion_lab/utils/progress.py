"""Progress over long work (a sampler's steps, the judge's epochs): a rich bar in a terminal, plain
log lines (about every 10%) when the output is not one, or a task in a rich display that is
already live (Lightning's RichProgressBar during training: a second live display would fight it).

    with track("DDPM-500") as progress:
        sampler.sample(net, noise, contexts, on_step=progress.on_step)

No Lightning import here: callbacks pass ``trainer_display(trainer)`` as ``display``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

log = logging.getLogger(__name__)

LOG_STEPS = 10  # a log line every 1/10 of the work (integer arithmetic: no 0.1 rounding)


class StepProgress:
    """Receives progress as ``update(done, total)``; ``on_step`` fits a sampler's step hook and
    ``on_epoch`` the judge's epoch hook. ``lines`` counts the log lines written (plain mode)."""

    def __init__(
        self,
        description: str,
        display: Progress | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self.description = description
        self.display = display
        self.logger = logger
        self.task = None
        self.logged_tenths = -1
        self.lines = 0

    def update(self, done: int, total: int, detail: str = "") -> None:
        if self.display is not None:
            if self.task is None:
                self.task = self.display.add_task(self.description, total=total)
            self.display.update(self.task, completed=done, total=total)
            # Lightning's display refreshes on request (soft_refresh); a plain rich one by itself
            getattr(self.display, "soft_refresh", lambda: None)()
            return
        tenths = LOG_STEPS * done // total if total else LOG_STEPS
        if tenths > self.logged_tenths or done == total:
            self.logged_tenths = tenths
            suffix = f", {detail}" if detail else ""
            percent = 100 * done // total if total else 100
            self.logger.info("%s: %d/%d (%d%%)%s", self.description, done, total, percent, suffix)
            self.lines += 1

    def on_step(self, index: int, total: int, t_prev: int, x: Any) -> None:
        """A sampler's ``on_step(i, n, t_prev, x)``."""
        self.update(index, total, f"t={t_prev}")

    def on_epoch(self, epoch: int, epochs: int, loss: float) -> None:
        """The judge's ``on_epoch(epoch, epochs, mean loss)``."""
        self.update(epoch, epochs, f"loss {loss:.4f}")

    def close(self) -> None:
        if self.display is not None and self.task is not None:
            self.display.remove_task(self.task)
            getattr(self.display, "soft_refresh", lambda: None)()


def in_terminal() -> bool:
    """Whether stdout is a terminal (as rich sees it: FORCE_COLOR/TERM and the like count)."""
    return Console().is_terminal


def own_display() -> Progress:
    """A transient rich bar of its own: description, bar, done/total, elapsed."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    )


@contextmanager
def track(
    description: str,
    display: Progress | None = None,
    allow_live: bool = True,
    logger: logging.Logger = log,
) -> Iterator[StepProgress]:
    """A :class:`StepProgress` for one piece of work.

    ``display``: a live rich Progress to add a task to (removed after); else, with ``allow_live``
    and a terminal, a rich bar of its own for the block; else log lines on ``logger``. Callbacks
    pass ``allow_live=False``: inside a training run only the trainer's display may be live.
    """
    if display is None and allow_live and in_terminal():
        with own_display() as owned:
            progress = StepProgress(description, owned, logger)
            yield progress
        return
    progress = StepProgress(description, display, logger)
    try:
        yield progress
    finally:
        progress.close()


ProgressFactory = Callable[[str], AbstractContextManager[StepProgress]]


def trainer_display(trainer: Any) -> Progress | None:
    """The trainer's live rich display (Lightning's RichProgressBar while it runs), or None (no
    bar, another bar, or one that is not started or already stopped)."""
    bar = getattr(trainer, "progress_bar_callback", None)
    display = getattr(bar, "progress", None)
    if isinstance(display, Progress) and display.live.is_started:
        return display
    return None


def trainer_progress(trainer: Any) -> ProgressFactory:
    """``track`` for work inside a training run: a task in the trainer's rich display when it is
    live, else log lines; never a live display of its own."""
    return lambda description: track(
        description, display=trainer_display(trainer), allow_live=False
    )
