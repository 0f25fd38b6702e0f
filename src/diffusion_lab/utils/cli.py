"""How every entry point ends on bad input: one line on stderr and exit status 2.

    diffusion-train: error: data.batch_size must be an integer >= 1, got 0

:func:`input_errors_end_the_command` wraps a Hydra task function (inside ``@hydra.main``: Hydra's
``run_job`` catches every Exception of the task to print "Error executing job" and a traceback,
so the catch has to be inside). Only :class:`~diffusion_lab.utils.checks.InputError` is caught;
any other exception keeps its traceback. In a multirun the error is raised on instead, so that it
fails that one job (the sweep's summary records it as failed) and the other jobs still run.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from diffusion_lab.utils.checks import InputError

T = TypeVar("T")


def command_error_line(command: str, error: BaseException) -> str:
    """``<command>: error: <message>`` on one line."""
    return f"{command}: error: " + " ".join(str(error).split())


def input_error_in(error: BaseException) -> InputError | None:
    """``error`` itself if it is an InputError, or the InputError Hydra's instantiate wrapped
    (an InstantiationException whose cause, at some depth, is one); else None."""
    from hydra.errors import InstantiationException

    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error if isinstance(error, InputError) else None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def exit_on_input_error(command: str, error: InputError) -> None:
    """Print ``error`` as the command's one line on stderr and exit with status 2."""
    print(command_error_line(command, error), file=sys.stderr, flush=True)
    sys.exit(2)


def input_errors_end_the_command(command: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a task function so that an InputError ends ``command`` with one line and status 2
    (raised on in a multirun: see the module docstring)."""

    def decorate(task: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(task)
        def run(*args, **kwargs) -> T:
            try:
                return task(*args, **kwargs)
            except Exception as error:
                input_error = input_error_in(error)
                if input_error is None or _in_multirun():
                    raise
                exit_on_input_error(command, input_error)
                raise  # not reached: sys.exit raised

        return run

    return decorate
