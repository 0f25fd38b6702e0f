"""SampleGrids: every N epochs, a panel of samplers (DDPM beside the sampler group's sampler by
default) on the same noise and contexts, timed, on disk and in every logger that takes images; a
GIF of their denoising chains when training ends.

The samplers are partial sampler configs (name -> config, as conf/sampler/*.yaml), built on the
module's schedule with ``pl_module.make_sampler`` as the quality panel builds its own: the grid's
samplers are the ones the run samples with, options (``eps_scale``, ``clip_denoised``, ...)
included.

The last epoch's grid records the chains' trajectories as it samples, and the GIF is made from
them: the final DDPM chain (T network calls) runs once, not once for the grid and again for the
GIF. Only when training stops before its last epoch (max_steps, an interruption) does the GIF
sample its own chains. Every chain stops between two steps once a preemption signal arrived
(``stopping``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image

from diffusion_lab.callbacks.epochs import is_due, is_last_epoch
from diffusion_lab.callbacks.preemption import stopping
from diffusion_lab.diffusion import NoiseSchedule, Sampler
from diffusion_lab.lit_module import Trajectory
from diffusion_lab.runs.layout import SAMPLES_DIR
from diffusion_lab.utils.checks import require_int
from diffusion_lab.utils.images import labelled_grid, save_gif, save_image, side_by_side
from diffusion_lab.utils.progress import ProgressFactory, track, trainer_progress

log = logging.getLogger(__name__)

# a partial taking the noise schedule (what Hydra makes of a conf/sampler config) or such a config
SamplerFactory = Callable[[NoiseSchedule], Sampler] | Mapping[str, Any]


def one_hot_rows(num_classes: int, per_class: int) -> torch.Tensor:
    """Contexts (num_classes * per_class, num_classes): class 0 repeated per_class times, then 1..."""
    return torch.eye(num_classes).repeat_interleave(per_class, dim=0)


def build_sampler(pl_module, factory: SamplerFactory) -> Sampler:
    """A sampler on the module's schedule from a partial config (or the partial Hydra made)."""
    if isinstance(factory, Mapping):
        return pl_module.make_sampler(factory)
    return factory(pl_module.schedule)


def panel_title(sampler: Sampler, seconds: float) -> str:
    """The sampler's own description: e.g. "DDIM, 25 NFE, 0.8 s"."""
    return f"{sampler.label}, {sampler.nfe} NFE, {seconds:.1f} s"


class SampleGrids(L.Callback):
    """Sample grids of a panel of samplers during training, side by side on the same noise.

    Args:
        samplers: name -> partial sampler config (as conf/sampler/*.yaml) or the partial Hydra
            made of one; one panel each, left to right. By default (conf/callbacks) ``ddpm``
            (all T steps, the sampler group's variance and clipping) and ``ddim`` (the sampler
            group's sampler: DDIM 25 steps unless ``sampler=`` says otherwise). Metrics:
            ``samples/<name>_seconds``.
        output_dir: where ``epoch_XXX.png`` and ``denoising.gif`` go; default
            ``<trainer.default_root_dir>/samples``.
        every_n_epochs: write a grid after every N-th epoch (and always after the last).
        samples_per_class: images per row; one row per class.
        guidance_scale: classifier-free guidance weight w for every sampler.
        seed: seed of the fixed noise, the same every epoch so grids are comparable.
        scale: nearest-neighbour upscaling of the small images in the PNG.
        animate: write ``denoising.gif`` at the end of training.
        animation_frames: about how many frames the GIF has.
        animation_columns: images of each class row the GIF shows (the full grid in every frame
            would make a file of several MB: noise compresses badly).
    """

    def __init__(
        self,
        samplers: Mapping[str, SamplerFactory],
        output_dir: str | None = None,
        every_n_epochs: int = 1,
        samples_per_class: int = 8,
        guidance_scale: float = 0.0,
        seed: int = 0,
        scale: int = 3,
        animate: bool = True,
        animation_frames: int = 25,
        animation_columns: int = 4,
    ) -> None:
        for name, value in (
            ("every_n_epochs", every_n_epochs),
            ("samples_per_class", samples_per_class),
            ("animation_frames", animation_frames),
            ("animation_columns", animation_columns),
        ):
            require_int(f"callbacks.samples.{name}", value, minimum=1)
        self.factories = {name: f for name, f in (samplers or {}).items() if f is not None}
        if not self.factories:
            raise ValueError(
                "callbacks.samples.samplers names no sampler; give name -> partial sampler "
                "config, e.g. {ddpm: ..., ddim: ${sampler}}"
            )
        self.output_dir = Path(output_dir) if output_dir else None
        self.every_n_epochs = every_n_epochs
        self.samples_per_class = samples_per_class
        self.guidance_scale = guidance_scale
        self.seed, self.scale = seed, scale
        self.animate, self.animation_frames = animate, animation_frames
        self.animation_columns = animation_columns
        self.samplers: dict[str, Sampler] = {}
        self.last_grid: Path | None = None
        self.last_gif: Path | None = None
        self.last_images: dict[str, torch.Tensor] = {}  # the last grid's images, per sampler
        # the final chains for the GIF: sampler name -> (frames (F, B', C, H, W), timesteps)
        self.final_trajectories: dict[str, tuple[torch.Tensor, list[int]]] = {}

    # --- set-up ------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / SAMPLES_DIR
        # build now, so a bad sampler option fails before the first epoch, not after it
        self.samplers = {name: build_sampler(pl_module, f) for name, f in self.factories.items()}
        generator = torch.Generator().manual_seed(self.seed)
        self.contexts = one_hot_rows(pl_module.num_classes, self.samples_per_class)
        self.noise = torch.randn(
            (self.contexts.shape[0], *pl_module.image_shape), generator=generator
        )

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        # class names arrive from the datamodule in the module's setup, after the callbacks' setup
        names = pl_module.class_names or [str(i) for i in range(pl_module.num_classes)]
        self.row_labels = list(names)

    def _panel(self, images: torch.Tensor, title: str) -> Image.Image:
        return labelled_grid(images, self.row_labels, title=title, scale=self.scale)

    # --- every N epochs -----------------------------------------------------------------
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        last = is_last_epoch(trainer)
        if not trainer.is_global_zero or not is_due(trainer, self.every_n_epochs):
            return
        # the sampling noise comes from the callback's own generators: the grid leaves the training
        # RNG untouched (an exact resume), and every epoch's grid draws the same noise
        # the last grid also records the GIF's frames: its chains are sampled once for both
        record = last and self.animate
        progress = trainer_progress(trainer)
        runs = {
            name: self._grid_panel(pl_module, name, sampler, record, progress)
            for name, sampler in self.samplers.items()
        }
        self.last_images = {name: run.images for name, run in runs.items()}
        titles = {name: panel_title(self.samplers[name], run.seconds) for name, run in runs.items()}
        caption = f"epoch {epoch}, EMA weights, guidance {self.guidance_scale:g}: same noise"
        picture = side_by_side(
            [self._panel(runs[name].images, titles[name]) for name in runs], caption
        )
        self.last_grid = save_image(picture, self.output_dir / f"epoch_{epoch:03d}.png")
        pl_module.log_dict(
            {f"samples/{name}_seconds": run.seconds for name, run in runs.items()},
            rank_zero_only=True,
        )
        described = [f"{name}: {self.samplers[name]!r}, {titles[name]}" for name in runs]
        self._log_picture(trainer, picture, " | ".join([*described, caption]))

    def _log_picture(self, trainer: L.Trainer, picture: Image.Image, caption: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("samples", [picture], step=trainer.global_step, caption=[caption])
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    "samples", np.asarray(picture), trainer.global_step, dataformats="HWC"
                )

    # --- at the end: the denoising as a GIF ------------------------------------------
    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if not self.animate or not trainer.is_global_zero:
            return
        if self.final_trajectories:  # recorded while sampling the last epoch's grid
            frames = self._pictures(self.final_trajectories)
        else:
            frames = self.animation(pl_module, trainer_progress(trainer))
        self.last_gif = save_gif(frames, self.output_dir / "denoising.gif")
        labels = " | ".join(sampler.label for sampler in self.samplers.values())
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_video("denoising", [str(self.last_gif)], caption=[labels])
        log.info("wrote %s", self.last_gif)

    def _every(self, sampler: Sampler) -> int:
        """Keep every so many steps: about `animation_frames` frames per chain."""
        return max(1, sampler.nfe // self.animation_frames)

    def _animated(self) -> torch.Tensor:
        """Rows of the grid the GIF shows: the first ``animation_columns`` images of each row."""
        columns = min(self.samples_per_class, self.animation_columns)
        return torch.arange(len(self.noise)).view(-1, self.samples_per_class)[:, :columns].flatten()

    def _sample(
        self,
        pl_module,
        sampler: Sampler,
        label: str,
        progress: ProgressFactory,
        keep: torch.Tensor | None = None,
        frames: bool = False,
    ) -> Trajectory:
        """One chain on the grid's noise (its ``keep`` images), with a progress display and the
        stop check; with ``frames``, about ``animation_frames`` frames of it."""
        noise, contexts = self.noise, self.contexts
        if keep is not None:
            noise, contexts = noise[keep], contexts[keep]
        with progress(label) as bar:
            return pl_module.sample_trajectory(
                contexts,
                noise,
                sampler,
                self.guidance_scale,
                torch.Generator().manual_seed(self.seed),
                use_ema=True,
                frame_every=self._every(sampler) if frames else None,
                on_step=stopping(bar.on_step),
            )

    def _grid_panel(
        self, pl_module, name: str, sampler: Sampler, record: bool, progress: ProgressFactory
    ) -> Trajectory:
        """One sampler on the grid's noise; with ``record``, from its trajectory, whose GIF rows
        are kept in `final_trajectories[name]`."""
        label = f"grid {name.upper()}-{sampler.nfe}"
        run = self._sample(pl_module, sampler, label, progress, frames=record)
        if record:
            self.final_trajectories[name] = (run.frames[:, self._animated()], run.timesteps)
        return run

    def animation(self, pl_module, progress: ProgressFactory = track) -> list[Image.Image]:
        """GIF frames: every sampler denoising the same noise, side by side (sampled now)."""
        chains = {}
        for name, sampler in self.samplers.items():
            run = self._sample(
                pl_module, sampler, f"GIF {sampler.label}", progress, self._animated(), True
            )
            chains[name] = (run.frames, run.timesteps)
        return self._pictures(chains)

    def _pictures(self, chains: Mapping[str, tuple[torch.Tensor, list[int]]]) -> list[Image.Image]:
        """One side-by-side picture per frame; a shorter chain holds its last frame."""
        count = max(len(times) for _, times in chains.values())
        pictures = []
        for index in range(count):
            panels = []
            for name, (frames, times) in chains.items():
                i = min(index, len(times) - 1)
                label = self.samplers[name].label
                panels.append(self._panel(frames[i], f"{label} t={times[i]}"))
            pictures.append(side_by_side(panels))
        return pictures
