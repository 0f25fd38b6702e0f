"""SampleGrids: every N epochs, DDPM beside DDIM on the same noise and contexts, timed, on disk
and in every logger that takes images; a GIF of both denoising chains when training ends.

The last epoch's grid records the chains' trajectories as it samples, and the GIF is made from
them: the final DDPM chain (T network calls) runs once, not once for the grid and again for the
GIF. Only when training stops before its last epoch (max_steps, an interruption) does the GIF
sample its own chains."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image

from diffusion_lab.callbacks.epochs import is_due, is_last_epoch
from diffusion_lab.callbacks.preemption import stopping
from diffusion_lab.diffusion import DDIMSampler, DDPMSampler, Sampler
from diffusion_lab.diffusion.samplers import StepCallback
from diffusion_lab.runs.layout import SAMPLES_DIR
from diffusion_lab.utils.images import labelled_grid, save_gif, save_image, side_by_side
from diffusion_lab.utils.progress import ProgressFactory, track, trainer_progress
from diffusion_lab.utils.timing import timed

log = logging.getLogger(__name__)
ANIMATION_COLUMNS = 4


def one_hot_rows(num_classes: int, per_class: int) -> torch.Tensor:
    """Contexts (num_classes * per_class, num_classes): class 0 repeated per_class times, then 1..."""
    return torch.eye(num_classes).repeat_interleave(per_class, dim=0)


def timed_sample(
    module,
    sampler: Sampler,
    noise: torch.Tensor,
    contexts: torch.Tensor,
    guidance_scale: float,
    generator: torch.Generator | None = None,
    on_step: StepCallback | None = None,
) -> tuple[torch.Tensor, float]:
    """(images, wall seconds) for one sampler run on the module's EMA weights; stops between
    steps once a preemption signal arrived (``check_stop``), after calling ``on_step`` (progress)."""
    contexts = contexts.to(module.device)
    return timed(
        lambda: module.sample(
            contexts,
            noise,
            sampler=sampler,
            guidance_scale=guidance_scale,
            generator=generator,
            on_step=stopping(on_step),
        ),
        module.device,
    )


class SampleGrids(L.Callback):
    """DDPM-vs-DDIM sample grids during training.

    Args:
        output_dir: where ``epoch_XXX.png`` and ``denoising.gif`` go; default
            ``<trainer.default_root_dir>/samples``.
        every_n_epochs: write a grid after every N-th epoch (and always after the last).
        samples_per_class: images per row; one row per class.
        ddim_steps, ddim_eta: the DDIM sampler; DDPM always runs all T steps.
        ddpm_variance: ``beta`` (the course), ``posterior`` or ``none``.
        clip_denoised: clamp both samplers' x0_hat to [-1, 1] (as the sampler group does).
        guidance_scale: classifier-free guidance weight w for both samplers.
        seed: seed of the fixed noise, the same every epoch so grids are comparable.
        scale: nearest-neighbour upscaling of the small images in the PNG.
        animate: write ``denoising.gif`` at the end of training (the first 4 images of each row).
        animation_frames: about how many frames the GIF has.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        every_n_epochs: int = 1,
        samples_per_class: int = 8,
        ddim_steps: int = 25,
        ddim_eta: float = 0.0,
        ddpm_variance: str = "beta",
        clip_denoised: bool = False,
        guidance_scale: float = 0.0,
        seed: int = 0,
        scale: int = 3,
        animate: bool = True,
        animation_frames: int = 25,
    ) -> None:
        if every_n_epochs < 1 or samples_per_class < 1 or animation_frames < 1:
            raise ValueError(
                "every_n_epochs, samples_per_class and animation_frames must be >= 1, got "
                f"{every_n_epochs}, {samples_per_class}, {animation_frames}"
            )
        self.output_dir = Path(output_dir) if output_dir else None
        self.every_n_epochs = every_n_epochs
        self.samples_per_class = samples_per_class
        self.ddim_steps, self.ddim_eta, self.ddpm_variance = ddim_steps, ddim_eta, ddpm_variance
        self.clip_denoised = clip_denoised
        self.guidance_scale = guidance_scale
        self.seed, self.scale = seed, scale
        self.animate, self.animation_frames = animate, animation_frames
        self.last_grid: Path | None = None
        self.last_gif: Path | None = None
        self.last_images: dict[str, torch.Tensor] = {}  # the last grid's images, per sampler
        # the final chains for the GIF: sampler name -> (frames (F, B', C, H, W), timesteps)
        self.final_trajectories: dict[str, tuple[torch.Tensor, list[int]]] = {}

    # --- set-up ------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / SAMPLES_DIR
        # build now, so a bad ddim_steps or variance fails before the first epoch, not after it
        clip = self.clip_denoised
        self.ddpm = DDPMSampler(pl_module.schedule, variance=self.ddpm_variance, clip_denoised=clip)
        self.ddim = DDIMSampler(
            pl_module.schedule, steps=self.ddim_steps, eta=self.ddim_eta, clip_denoised=clip
        )
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
        (ddpm_images, ddpm_seconds), (ddim_images, ddim_seconds) = (
            self._grid_panel(pl_module, name, sampler, record, progress)
            for name, sampler in (("ddpm", self.ddpm), ("ddim", self.ddim))
        )
        self.last_images = {"ddpm": ddpm_images, "ddim": ddim_images}
        ddpm_title = f"DDPM {self.ddpm.nfe} steps, {ddpm_seconds:.1f} s"
        ddim_title = f"DDIM {self.ddim.nfe} steps (eta {self.ddim_eta:g}), {ddim_seconds:.1f} s"
        caption = f"epoch {epoch}, EMA weights, guidance {self.guidance_scale:g}: same noise"
        picture = side_by_side(
            [self._panel(ddpm_images, ddpm_title), self._panel(ddim_images, ddim_title)], caption
        )
        self.last_grid = save_image(picture, self.output_dir / f"epoch_{epoch:03d}.png")
        pl_module.log_dict(
            {"samples/ddpm_seconds": ddpm_seconds, "samples/ddim_seconds": ddim_seconds},
            rank_zero_only=True,
        )
        full_caption = f"{ddpm_title} | {ddim_title} | {caption}"
        self._log_picture(trainer, picture, full_caption)

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
            frames = self._pictures(
                self.final_trajectories["ddpm"], self.final_trajectories["ddim"]
            )
        else:
            frames = self.animation(pl_module, trainer_progress(trainer))
        self.last_gif = save_gif(frames, self.output_dir / "denoising.gif")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_video("denoising", [str(self.last_gif)], caption=["DDPM | DDIM"])
        log.info("wrote %s", self.last_gif)

    def _every(self, sampler: Sampler) -> int:
        """Keep every so many steps: about `animation_frames` frames per chain."""
        return max(1, sampler.nfe // self.animation_frames)

    def _animated(self) -> torch.Tensor:
        """Rows of the grid the GIF shows: the first ANIMATION_COLUMNS images of each class row
        (the full grid in every frame would make a file of several MB: noise compresses badly)."""
        columns = min(self.samples_per_class, ANIMATION_COLUMNS)
        return torch.arange(len(self.noise)).view(-1, self.samples_per_class)[:, :columns].flatten()

    def _grid_panel(
        self, pl_module, name: str, sampler: Sampler, record: bool, progress: ProgressFactory
    ) -> tuple[torch.Tensor, float]:
        """(images, seconds) of one sampler on the grid's noise; with ``record``, from its
        trajectory, whose GIF rows are kept in `final_trajectories[name]`."""
        noise = self.noise.to(pl_module.device)
        generator = torch.Generator().manual_seed(self.seed)
        with progress(f"grid {name.upper()}-{sampler.nfe}") as bar:
            if not record:
                return timed_sample(
                    pl_module,
                    sampler,
                    noise,
                    self.contexts,
                    self.guidance_scale,
                    generator,
                    bar.on_step,
                )
            contexts = self.contexts.to(pl_module.device)

            def run() -> tuple[torch.Tensor, list[int]]:
                with pl_module.sampling_net(use_ema=True) as net:
                    every, hook = self._every(sampler), stopping(bar.on_step)
                    return sampler.trajectory(
                        net, noise, every, contexts, self.guidance_scale, generator, on_step=hook
                    )

            (frames, times), seconds = timed(run, pl_module.device)
        self.final_trajectories[name] = (frames[:, self._animated()], times)
        return frames[-1], seconds

    def _trajectory(
        self, pl_module, sampler: Sampler, progress: ProgressFactory = track
    ) -> tuple[torch.Tensor, list[int]]:
        keep = self._animated()
        noise = self.noise[keep].to(pl_module.device)
        contexts = self.contexts[keep].to(pl_module.device)
        name = type(sampler).__name__.removesuffix("Sampler")
        with pl_module.sampling_net(use_ema=True) as net, progress(f"GIF {name}") as bar:
            return sampler.trajectory(
                net,
                noise,
                self._every(sampler),
                contexts,
                self.guidance_scale,
                torch.Generator().manual_seed(self.seed),
                on_step=stopping(bar.on_step),
            )

    def animation(self, pl_module, progress: ProgressFactory = track) -> list[Image.Image]:
        """GIF frames: DDPM and DDIM denoising the same noise side by side (sampled now)."""
        return self._pictures(
            self._trajectory(pl_module, self.ddpm, progress),
            self._trajectory(pl_module, self.ddim, progress),
        )

    def _pictures(
        self, ddpm: tuple[torch.Tensor, list[int]], ddim: tuple[torch.Tensor, list[int]]
    ) -> list[Image.Image]:
        """One side-by-side picture per frame; the shorter chain holds its last frame."""
        (ddpm_frames, ddpm_times), (ddim_frames, ddim_times) = ddpm, ddim
        count = max(len(ddpm_times), len(ddim_times))
        pictures = []
        for index in range(count):
            i, j = min(index, len(ddpm_times) - 1), min(index, len(ddim_times) - 1)
            panels = [
                self._panel(ddpm_frames[i], f"DDPM t={ddpm_times[i]}"),
                self._panel(ddim_frames[j], f"DDIM t={ddim_times[j]}"),
            ]
            pictures.append(side_by_side(panels))
        return pictures
