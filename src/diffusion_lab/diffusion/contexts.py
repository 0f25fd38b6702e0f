"""Contexts: one-hot classes, weighted mixes and interpolations, parsed from names.

A context is a float vector of width K (the number of classes). One-hot selects a class; other
weights mix classes (the course's [1, 0, 0.6, 0, 0] is "hero + 0.6 food"); all zeros is the null
context (unconditional, what classifier-free guidance contrasts against).

Text forms, as the ``diffusion-sample`` command line takes them:
    "hero"                 one class by name (or by index: "3")
    "hero:1,food:0.6"      a weighted mix
    "all"                  one row per class
    "null" / None          the null context
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from diffusion_lab.utils.checks import InputError

NULL_NAMES = ("null", "none", "")


def class_index(name: str, class_names: Sequence[str]) -> int:
    """The column of a class given by name or by its index as text."""
    name = name.strip()
    if name in class_names:
        return list(class_names).index(name)
    if name.isdigit() and int(name) < len(class_names):
        return int(name)
    known = ", ".join(class_names)
    raise InputError(
        f"unknown class {name!r}; known classes: {known} (or an index 0..{len(class_names) - 1})"
    )


def mix(weights: Mapping[str, float], class_names: Sequence[str]) -> torch.Tensor:
    """A context (K,) with the given weight on each named class, zero elsewhere."""
    context = torch.zeros(len(class_names))
    for name, weight in weights.items():
        context[class_index(name, class_names)] += float(weight)
    return context


def parse_context(spec: str, class_names: Sequence[str]) -> torch.Tensor:
    """One context (K,) from "hero", "3", "hero:1,food:0.6" or "null"."""
    text = str(spec).strip()
    if text.lower() in NULL_NAMES:
        return torch.zeros(len(class_names))
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight_text = part.partition(":")
        if not weight_text:
            weights[name] = weights.get(name, 0.0) + 1.0
            continue
        try:
            weight = float(weight_text)
        except ValueError:
            raise InputError(
                f"weight {weight_text.strip()!r} of class {name.strip()!r} in context {text!r} "
                "is not a number; write e.g. 'hero:1,food:0.6'"
            ) from None
        if not math.isfinite(weight):
            raise InputError(
                f"weight {weight_text.strip()!r} of class {name.strip()!r} is not finite"
            )
        weights[name] = weights.get(name, 0.0) + weight
    return mix(weights, class_names)


def parse_contexts(
    specs: str | Sequence[str] | None, class_names: Sequence[str]
) -> tuple[torch.Tensor | None, list[str]]:
    """Rows of contexts (R, K) and a label for each row.

    ``"all"``: one row per class; ``None``/``"null"``: a single unconditional row (returned as
    None, the null context); else a list of :func:`parse_context` specs.
    """
    if not class_names:
        raise InputError("the model has no class names to parse contexts against")
    if specs is None or (isinstance(specs, str) and specs.strip().lower() in NULL_NAMES):
        return None, ["unconditional"]
    if isinstance(specs, str):
        specs = [specs] if specs.strip().lower() != "all" else list(class_names)
    if len(specs) == 0:
        raise InputError("no contexts given; use a class name, 'all' or null")
    rows = torch.stack([parse_context(spec, class_names) for spec in specs])
    return rows, [str(spec).strip() for spec in specs]


def interpolate(start: torch.Tensor, end: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` contexts (steps, K) on the straight line from start (K,) to end (K,), both ends
    included: c_i = (1 - i / (steps - 1)) start + i / (steps - 1) end."""
    if steps < 2:
        raise InputError(f"an interpolation needs steps >= 2, got {steps}")
    if start.shape != end.shape or start.ndim != 1:
        raise ValueError(
            f"start and end must be contexts of one width (K,), got {tuple(start.shape)} and "
            f"{tuple(end.shape)}"
        )
    fractions = torch.linspace(0.0, 1.0, steps, dtype=start.dtype)[:, None]
    return (1 - fractions) * start + fractions * end
