"""One check, used by training (the net built from the config) and by evaluation (a trained
checkpoint): does this data fit this model?"""

from __future__ import annotations

from collections.abc import Sequence

from diffusion_lab.utils.checks import InputError


def check_data_fits(
    data_shape: Sequence[int],
    data_class_names: Sequence[str],
    model_shape: Sequence[int],
    model_num_classes: int,
    model_class_names: Sequence[str] = (),
    model: str = "the model",
    fix: str = "",
) -> None:
    """Images (C, H, W) of the data must be the model's, and its classes the model's context
    dimensions: the same names when the model has names (a checkpoint), else as many.

    ``model`` names the model in the message (``the checkpoint 'x.ckpt'``); ``fix`` says what
    to change. Raises InputError naming both sides."""
    data_names, model_names = list(data_class_names), list(model_class_names)
    names_differ = (
        data_names != model_names if model_names else len(data_names) != model_num_classes
    )
    if tuple(data_shape) == tuple(model_shape) and not names_differ:
        return
    classes = f"the classes {model_names}" if model_names else f"{model_num_classes} classes"
    raise InputError(
        f"the data gives images {tuple(data_shape)} of the {len(data_names)} classes "
        f"{data_names}, but {model} takes images {tuple(model_shape)} of {classes}"
        + (f"; {fix}" if fix else "")
    )
