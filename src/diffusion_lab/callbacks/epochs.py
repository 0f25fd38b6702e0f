"""When an every-N-epochs callback (the sample grids, the quality panel) runs: one rule for all."""

from __future__ import annotations

import lightning as L


def is_last_epoch(trainer: L.Trainer) -> bool:
    """True in the epoch that ends training: max_epochs or max_steps reached, or a stop requested
    (early stopping, a callback's ``trainer.should_stop``)."""
    epochs_done = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
    steps_done = trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps
    return epochs_done or steps_done or trainer.should_stop


def is_due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """True after every ``every_n_epochs``-th epoch and after the last one."""
    return (trainer.current_epoch + 1) % every_n_epochs == 0 or is_last_epoch(trainer)
