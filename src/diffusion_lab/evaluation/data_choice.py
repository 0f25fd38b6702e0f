"""The data a checkpoint was trained with, and what an evaluation changed of it.

diffusion-train stores its data config in the checkpoint (the module's ``data`` hparam). An
evaluation starts from that config, so it judges on the same source, split seed, val fraction and
image size that training held out, and reports every value that an explicit override changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from diffusion_lab.utils.checks import InputError


@dataclass
class DataChoice:
    """The data config to use (plain, resolved), where it came from, whether it is the trained
    one (with single values overridden) rather than one given whole, and the values that differ
    from the trained config as ``key: trained -> used`` lines."""

    config: dict[str, Any]
    origin: str
    trained: bool = True
    changes: list[str] = field(default_factory=list)

    @property
    def note(self) -> str:
        """One line for logs and results.md."""
        if self.trained and not self.changes:
            return f"Data: as trained ({self.origin})."
        changes = f", overridden here: {'; '.join(self.changes)}" if self.changes else ""
        return f"Data: {self.origin}{changes}."


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def data_changes(trained: Mapping[str, Any], used: Mapping[str, Any]) -> list[str]:
    """``data.<key>: <trained> -> <used>`` for every leaf that differs (absent: ``-``)."""
    before, after = _flatten(trained), _flatten(used)
    return [
        f"data.{key}: {before.get(key, '-')} -> {after.get(key, '-')}"
        for key in sorted(set(before) | set(after))
        if before.get(key, "-") != after.get(key, "-")
    ]


def choose_data(
    checkpoint: Path, stored: Mapping[str, Any] | None, given: Mapping[str, Any] | None
) -> DataChoice:
    """The data config an evaluation uses: the trained one, with ``given`` applied.

    ``given`` is what the command line set: nothing (the data as trained), a whole data config
    with a ``_target_`` (``data=sprites``: it replaces the trained one), or single fields
    (``+data.val_fraction=0.1``: merged into the trained one). Raises ValueError when no trained
    config is known and ``given`` is not a whole one."""
    trained = dict(stored) if stored else None
    origin = f"from the checkpoint {checkpoint}" if trained else "not stored in the checkpoint"
    given = dict(given or {})
    if "_target_" in given:
        changes = data_changes(trained, given) if trained is not None else []
        origin = f"a data config given here (the trained one: {origin})"
        return DataChoice(given, origin, trained=False, changes=changes)
    if trained is None:
        raise InputError(
            f"the data the checkpoint {str(checkpoint)!r} was trained with is {origin}; "
            "pass it, e.g. data=digits or data=sprites data.seed=<the training seed>"
        )
    used = OmegaConf.to_container(OmegaConf.merge(trained, given), resolve=True)
    return DataChoice(used, origin, changes=data_changes(trained, used))
