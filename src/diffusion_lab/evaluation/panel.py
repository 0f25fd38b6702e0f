"""The samplers a study compares, from partial sampler configs (conf/sampler/*.yaml).

A panel maps a name (the sampler family: ddpm, ddim, dpmpp, ...) to a partial config
``{"_target_": ..., "_partial_": True, **options}`` that takes the noise schedule. An option given
as a list is a grid axis: the entry expands into one sampler per combination, in order (DDIM with
``steps: [10, 25]`` and ``eta: [0.0, 1.0]`` gives 10/0, 10/1, 25/0, 25/1). Any sampler class with
that constructor plugs in; nothing here knows a sampler by name. Plain data only: the caller
instantiates each entry's ``config`` (``hydra.utils.instantiate(config)(schedule)``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from diffusion_lab.utils.checks import InputError, is_int


@dataclass(frozen=True)
class PanelEntry:
    """One sampler of a panel: its family (the panel name), its options (lists expanded) and the
    partial config that builds it."""

    family: str
    options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def options_text(self) -> str:
        """E.g. "steps=25, eta=0.0" (the config's order)."""
        return ", ".join(f"{key}={value}" for key, value in self.options.items())

    @property
    def label(self) -> str:
        """E.g. "ddim (steps=25, eta=0.0)"."""
        return f"{self.family} ({self.options_text})" if self.options else self.family


def _is_option(key: str) -> bool:
    return not key.startswith("_")


def expand_entry(family: str, config: Mapping[str, Any]) -> list[PanelEntry]:
    """The entries of one panel config: one per combination of its list-valued options."""
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise InputError(
            f"panel entry {family!r} must be a sampler config with a _target_ (as in "
            f"conf/sampler/*.yaml), got {config!r}"
        )
    options = {key: value for key, value in config.items() if _is_option(key)}
    axes = [
        list(value) if isinstance(value, list | tuple) else [value] for value in options.values()
    ]
    for key, values in zip(options, axes):
        if not values:
            raise InputError(f"panel entry {family!r}: option {key} is an empty list")
    entries = []
    for combination in itertools.product(*axes):
        chosen = dict(zip(options, combination))
        entries.append(PanelEntry(family, chosen, {**config, **chosen}))
    return entries


def expand_panel(panel: Mapping[str, Mapping[str, Any] | None]) -> list[PanelEntry]:
    """Every entry of the panel in order; an entry set to None is left out (``panel.ddpm=null``)."""
    entries = [
        entry
        for family, config in panel.items()
        if config is not None
        for entry in expand_entry(family, config)
    ]
    if not entries:
        raise InputError(
            f"no sampler to study: the panel {dict(panel)} is empty; give a sampler (e.g. "
            "sampler=ddim) or panel entries"
        )
    return entries


def drop_steps_above(
    entries: Sequence[PanelEntry], timesteps: int
) -> tuple[list[PanelEntry], list[PanelEntry]]:
    """(entries that can run on T = ``timesteps``, those left out): a sampler cannot take more
    distinct steps than the schedule has timesteps, so an int ``steps`` option above T is skipped
    (and reported by the caller) rather than failing the whole study."""
    kept, dropped = [], []
    for entry in entries:
        steps = entry.options.get("steps")
        too_many = is_int(steps) and steps > timesteps
        (dropped if too_many else kept).append(entry)
    if not kept:
        raise InputError(
            f"no sampler to study: every one asks for more steps than the checkpoint's "
            f"T={timesteps} ({'; '.join(entry.label for entry in dropped)}); give steps <= "
            f"{timesteps}"
        )
    return kept, dropped
