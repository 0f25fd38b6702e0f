"""DiffusionModule: trains a denoising network on the DDPM objective.

Loss (Ho et al. 2020, eq. 14, the "simple" objective), optionally min-SNR weighted:

    t ~ U{1..T},  eps ~ N(0, I),  x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,
    L = E[ w_t || target - net(x_t, t / T, c) ||^2 ],

where the target is eps, v = alpha eps - sigma x_0 or x_0 (``prediction``, Salimans & Ho 2022) and
w_t = 1 or the min-SNR weight of that target (Hang et al. 2023: min(SNR, gamma) / SNR for eps,
/ (SNR + 1) for v, min(SNR, gamma) for x0); see :mod:`diffusion_lab.diffusion.predictions`.

The context c is replaced by the null (all-zero) context with probability ``context_dropout``,
which trains the unconditional model used by classifier-free guidance.

The network, noise schedule, sampler, optimizer and LR scheduler are given as configs (mappings with
``_target_``) and instantiated here, so the checkpoint's hyper-parameters hold the recipe, not a
pickled network, and ``DiffusionModule.load_from_checkpoint(path)`` rebuilds everything alone.

Many processes (DDP) and gradient accumulation:

- the EMA is updated once per optimizer step (after a batch whose step ran), so its update count
  ``ema.n_averaged`` equals ``global_step`` and its warm-up counts optimizer steps, whatever
  ``accumulate_grad_batches`` is; under DDP the floating buffers (BatchNorm's running statistics,
  which each rank updates from its own images) are averaged over the ranks first, so the live net
  and its EMA are the same on every rank;
- the LR schedule (:class:`~diffusion_lab.lr_schedule.WarmupThenDecay`) steps once per optimizer
  step: ``lr_warmup_steps`` of linear warmup, then the configured decay at each epoch's end;
- ``val/loss`` gives validation image i (its index in the validation set) the same timestep and
  noise in every run, whatever the batch size or the number of ranks: the loss of each image is
  a fixed function of the weights, and the ranks' sums and counts are summed into the mean over the set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf

from diffusion_lab import __version__
from diffusion_lab.data.fits import check_data_fits
from diffusion_lab.diffusion import NFECounter, NoiseSchedule, Sampler
from diffusion_lab.diffusion.predictions import (
    EpsModel,
    alpha_sigma,
    check_prediction,
    min_snr_weight,
    training_target,
)
from diffusion_lab.diffusion.samplers import StepCallback
from diffusion_lab.distributed import average_buffers, validation_indices
from diffusion_lab.lr_schedule import WarmupThenDecay
from diffusion_lab.models import fast_paths
from diffusion_lab.models.ema import EMA
from diffusion_lab.models.precision import AUTOCAST_DTYPES, in_precision, normalize_precision
from diffusion_lab.utils.checks import InputError, require_int
from diffusion_lab.utils.seeding import offset_seed_by_rank
from diffusion_lab.utils.timing import timed

LOSS_WEIGHTINGS = ("none", "min_snr")
CHECKPOINT_KEY = "diffusion_lab"  # marks a checkpoint as written by this project


@dataclass
class Trajectory:
    """One timed sampling chain: ``frames`` (F, N, C, H, W) on the module's device, the last
    being the images; the timestep of each frame (descending, ending on 0); wall ``seconds``
    (device synchronised); ``nfe``, the network calls counted while sampling."""

    frames: torch.Tensor
    timesteps: list[int]
    seconds: float
    nfe: int

    @property
    def images(self) -> torch.Tensor:
        """The final images (N, C, H, W)."""
        return self.frames[-1]


def _plain(config: Mapping | DictConfig | None) -> dict | None:
    """A resolved, plain-dict copy of a config (what hparams store)."""
    if config is None:
        return None
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)


class DiffusionModule(L.LightningModule):
    """Lightning wrapper around a denoising net (eps, v or x0 prediction), its schedule, EMA and
    sampling.

    Args:
        net: config of the network, e.g. ``{"_target_": "diffusion_lab.models.ContextUnet", ...}``.
        schedule: config of the noise schedule (``diffusion_lab.diffusion.make_schedule``).
        sampler: config of the default sampler, a partial taking the schedule
            (``{"_target_": "diffusion_lab.diffusion.DDIMSampler", "_partial_": True, "steps": 25}``).
        optimizer: config of a partial optimizer taking ``params``.
        lr_scheduler: config of a partial LR scheduler taking ``optimizer``, stepped every epoch; or None.
        lr_warmup_steps: linear LR warmup over this many optimizer steps before the decay (0: none,
            the learning rates are then exactly the lr_scheduler's); see ``lr_schedule.py``.
        class_names: one name per context dimension (stored in checkpoints for sampling).
        context_dropout: probability of training a sample with the null context.
        loss_weighting: ``none`` or ``min_snr`` (Hang et al. 2023) with ``min_snr_gamma``.
        prediction: what the net outputs, ``eps``, ``v`` or ``x0``; sampling converts it to eps
            (:meth:`sampling_net`), so every sampler works with every target.
        ema_decay: EMA decay; the EMA weights are used for validation and sampling.
        val_seed: seed of the fixed noise and timesteps used for the validation loss, so it is
            comparable across epochs and runs.
        fused_optimizer, channels_last, compile_net: the fast paths
            (:mod:`diffusion_lab.models.fast_paths`), each the same training up to rounding.
        fused_optimizer: build the optimizer with ``fused=True`` (one kernel for the whole update)
            when its class takes that argument and torch has fused kernels for the parameters'
            device (CUDA, and CPU since torch 2.4); otherwise the default implementation, with a
            warning. Same update up to float rounding.
        channels_last: store the network's and its EMA copy's 4-D weights channels-last (NHWC)
            when fitting starts, so convolutions run in that layout (faster with oneDNN on CPU
            in an A/B here; see docs/benchmarks.md). Same values, other strides.
        compile_net: ``torch.compile`` the network and its EMA copy (in place, so checkpoints keep
            their keys) when fitting starts: training steps and the sample grids run compiled.
            The first steps pay the compilation.
        data: the data config the module is trained with (stored only: diffusion-eval judges a
            checkpoint on the same data and split); None when unknown.
    """

    def __init__(
        self,
        net: Mapping,
        schedule: Mapping,
        sampler: Mapping,
        optimizer: Mapping,
        lr_scheduler: Mapping | None = None,
        lr_warmup_steps: int = 0,
        class_names: Sequence[str] = (),
        context_dropout: float = 0.1,
        loss_weighting: str = "none",
        min_snr_gamma: float = 5.0,
        ema_decay: float = 0.995,
        val_seed: int = 0,
        prediction: str = "eps",
        fused_optimizer: bool = False,
        channels_last: bool = False,
        compile_net: bool = False,
        data: Mapping | None = None,
    ) -> None:
        super().__init__()
        check_prediction(prediction)
        if not 0.0 <= context_dropout < 1.0:
            raise InputError(f"context_dropout must be in [0, 1), got {context_dropout}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise InputError(
                f"unknown loss_weighting {loss_weighting!r}; accepted: {', '.join(LOSS_WEIGHTINGS)}"
            )
        if min_snr_gamma <= 0:
            raise InputError(f"min_snr_gamma must be > 0, got {min_snr_gamma}")
        require_int("module.lr_warmup_steps", lr_warmup_steps, minimum=0)
        self.save_hyperparameters(
            {
                "net": _plain(net),
                "schedule": _plain(schedule),
                "sampler": _plain(sampler),
                "optimizer": _plain(optimizer),
                "lr_scheduler": _plain(lr_scheduler),
                "lr_warmup_steps": lr_warmup_steps,
                "class_names": list(class_names),
                "context_dropout": context_dropout,
                "loss_weighting": loss_weighting,
                "min_snr_gamma": min_snr_gamma,
                "ema_decay": ema_decay,
                "val_seed": val_seed,
                "prediction": prediction,
                "fused_optimizer": fused_optimizer,
                "channels_last": channels_last,
                "compile_net": compile_net,
                "data": _plain(data),
            }
        )
        self.net = instantiate(self.hparams.net)
        self.schedule: NoiseSchedule = instantiate(self.hparams.schedule)
        if prediction == "eps" and self.schedule.alpha_bars[-1].item() == 0:
            raise InputError(
                "the noise schedule has zero terminal SNR (alpha_bar_T = 0), where an eps-predicting "
                "net cannot give x0 (x0 = (x_T - eps) / 0); train with module.prediction=v (or x0), "
                "or set scheduler.zero_terminal_snr=false"
            )
        self.ema = EMA(self.net, decay=ema_decay)
        self._ema_updates: int | None = None  # ema.n_averaged, read once per fit (no device sync)
        self._val_draws: tuple[torch.Tensor, torch.Tensor] | None = None
        self._val_totals = torch.zeros(2, dtype=torch.float64)  # sum of losses, images: this rank
        num_classes = getattr(self.net, "n_cfeat", len(class_names))
        if class_names and len(class_names) != num_classes:
            raise InputError(
                f"{len(class_names)} class names {list(class_names)} for a net with "
                f"{num_classes} context dimensions"
            )

    # --- shapes the rest of the project asks about -------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.hparams.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the net takes."""
        return (self.net.in_channels, self.net.height, self.net.height)

    @property
    def num_classes(self) -> int:
        return self.net.n_cfeat

    def make_sampler(self, config: Mapping | None = None) -> Sampler:
        """A sampler on this module's schedule: from ``config`` (a partial), else the default one."""
        return instantiate(config if config is not None else self.hparams.sampler)(self.schedule)

    # --- training --------------------------------------------------------------------------
    @property
    def prediction(self) -> str:
        """What the net outputs: eps, v or x0."""
        return self.hparams.prediction

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None):
        """The net's raw output (eps, v or x0, see ``prediction``) for integer timesteps t (B,)."""
        return self.net(x, t.to(x.dtype) / self.schedule.timesteps, context)

    def _loss(
        self,
        net: torch.nn.Module,
        images: torch.Tensor,
        contexts: torch.Tensor,
        generator: torch.Generator | None = None,
        draws: tuple[torch.Tensor, torch.Tensor] | None = None,
        reduce: bool = True,
    ) -> torch.Tensor:
        """The (weighted) loss of a batch, its mean (or, without ``reduce``, per image (B,));
        ``draws`` = (t (B,), noise (B, C, H, W)) fixes the timesteps and noise, else they are
        drawn from ``generator`` (the global generator when None)."""
        batch = images.shape[0]
        if draws is not None:
            t, noise = draws
        else:
            t = torch.randint(
                1, self.schedule.timesteps + 1, (batch,), device=self.device, generator=generator
            )
            noise = torch.randn(
                images.shape, device=self.device, dtype=images.dtype, generator=generator
            )
        x_t = self.schedule.q_sample(images, t, noise)
        output = net(x_t, t.to(images.dtype) / self.schedule.timesteps, contexts)
        alpha, sigma = alpha_sigma(self.schedule.alpha_bars, t, images)
        target = training_target(self.prediction, images, noise, alpha, sigma)
        per_sample = F.mse_loss(output, target, reduction="none").mean(dim=(1, 2, 3))
        if self.hparams.loss_weighting == "min_snr":
            weight = min_snr_weight(
                self.prediction, self.schedule.snr(t), self.hparams.min_snr_gamma
            )
            per_sample = per_sample * weight.to(per_sample.dtype)
        return per_sample.mean() if reduce else per_sample

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, contexts = batch
        drop = torch.rand(contexts.shape[0], device=self.device) < self.hparams.context_dropout
        contexts = contexts.masked_fill(drop[:, None], 0.0)
        loss = self._loss(self.net, images, contexts)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After a batch whose optimizer step ran (``global_step`` moved past the EMA's count):
        the ranks' buffers agree, then one EMA update. Accumulating micro-batches update nothing."""
        if self._ema_updates is None:
            self._ema_updates = int(self.ema.n_averaged)
        if self._ema_updates >= self.trainer.global_step:
            return
        self.average_buffers_over_ranks()
        self.ema.update_parameters(self.net)
        self._ema_updates += 1

    def on_train_start(self) -> None:
        self._ema_updates = None  # read again from the (possibly restored) EMA
        # after a resume's optimizer state is restored (on_fit_start comes before that)
        for optimizer in self.trainer.optimizers:
            fast_paths.match_state_layouts(optimizer)

    def average_buffers_over_ranks(self) -> None:
        """Under DDP: the net's floating buffers set to their mean over the ranks
        (:func:`~diffusion_lab.distributed.average_buffers`)."""
        trainer = self.attached_trainer()
        if trainer is not None and trainer.world_size > 1:
            average_buffers(self.net, trainer.strategy)

    def validation_draws(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed timesteps (count,) and noise (count, C, H, W) of the validation images, row
        i for image i of the validation set: drawn once, in that order, from a generator on the
        device seeded with ``val_seed`` (t first, then the noise)."""
        cached = self._val_draws
        if cached is None or len(cached[0]) != count or cached[0].device != self.device:
            generator = torch.Generator(device=self.device).manual_seed(self.hparams.val_seed)
            t = torch.randint(
                1, self.schedule.timesteps + 1, (count,), device=self.device, generator=generator
            )
            noise = torch.randn((count, *self.image_shape), device=self.device, generator=generator)
            self._val_draws = cached = (t, noise)
        return cached

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, contexts = batch
        indices, count = validation_indices(self.trainer.val_dataloaders, batch_idx, len(images))
        t, noise = self.validation_draws(count)
        indices = indices.to(self.device)
        draws = (t[indices], noise[indices].to(images.dtype))
        losses = self._loss(self.ema.module, images, contexts, draws=draws, reduce=False)
        self._val_totals += torch.stack(
            [losses.detach().double().sum(), losses.new_tensor(len(losses)).double()]
        )
        return losses.mean()

    def on_validation_epoch_start(self) -> None:
        self._val_totals = torch.zeros(2, dtype=torch.float64, device=self.device)

    def on_validation_epoch_end(self) -> None:
        """val/loss = sum of the images' losses / their count, both summed over the ranks: the
        mean over the validation set, exact for uneven shards (Lightning's ``sync_dist`` mean
        averages the ranks' batch-size counts as integers, so 33 + 32 images count as 64)."""
        total, count = self.trainer.strategy.reduce(self._val_totals, reduce_op="sum")
        if count > 0:
            self.log("val/loss", (total / count).float(), prog_bar=True, sync_dist=False)

    def configure_optimizers(self):
        make_optimizer = instantiate(self.hparams.optimizer)
        options = {"fused": True} if self.hparams.fused_optimizer else {}
        if options and not fast_paths.fused_kernels_available(make_optimizer, self.device):
            rank_zero_warn(
                f"fused_optimizer: {getattr(make_optimizer, 'func', make_optimizer)} has no fused "
                f"kernels for {self.device.type} parameters here; using its default implementation"
            )
            options = {}
        optimizer = make_optimizer(params=self.net.parameters(), **options)
        warmup, decay = self.hparams.get("lr_warmup_steps", 0), self.hparams.lr_scheduler
        if decay is None and warmup == 0:
            return optimizer
        decay = instantiate(decay) if decay is not None else None
        scheduler = WarmupThenDecay(optimizer, warmup, decay)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Once per optimizer step (the scheduler's interval is "step"): tell the schedule whether
        that step ended the epoch (the decay's epoch step)."""
        if isinstance(scheduler, WarmupThenDecay):
            scheduler.step(epoch_ended=self.trainer.is_last_batch)
        else:
            super().lr_scheduler_step(scheduler, metric)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {"version": __version__, "precision": self.sampling_precision}

    def adopt_data(self, datamodule) -> None:
        """Check a set-up datamodule against the net (:func:`~diffusion_lab.data.fits.check_data_fits`)
        and take its class names (stored in checkpoints)."""
        check_data_fits(
            (datamodule.channels, datamodule.image_size, datamodule.image_size),
            datamodule.class_names,
            self.image_shape,
            self.num_classes,
            model=f"the model (n_cfeat={self.num_classes})",
            fix="keep model.* interpolating ${data.channels}, ${data.image_size} and "
            "${data.num_classes}",
        )
        self.hparams.class_names = list(datamodule.class_names)

    def setup(self, stage: str) -> None:
        trainer = self.attached_trainer()
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is not None:
            self.adopt_data(datamodule)

    def on_fit_start(self) -> None:
        self.schedule.to(self.device)
        if self.hparams.channels_last:
            fast_paths.to_channels_last(self.net, self.ema.module)
        if self.hparams.compile_net:
            fast_paths.compile_in_place(self.net, self.ema.module)
        if self.trainer.world_size > 1:
            offset_seed_by_rank(self.global_rank)  # the ranks' images differ: so must their draws

    def attached_trainer(self) -> L.Trainer | None:
        """The Trainer this module is attached to, or None (a module loaded to sample)."""
        try:
            return self.trainer
        except RuntimeError:  # Lightning's "is not attached to a `Trainer`"
            return None

    # --- sampling --------------------------------------------------------------------------
    _sampling_precision: str | None = None  # set: diffusion-sample's precision=... (load_module)
    _trained_precision: str | None = None  # the precision of the run that wrote the checkpoint

    @property
    def sampling_precision(self) -> str:
        """The precision the net runs in while sampling (:mod:`diffusion_lab.models.precision`:
        bf16-mixed runs the net's forward under bf16 autocast, the samplers' arithmetic in fp32):
        the one set (``precision=...`` of the sampling commands), else the attached trainer's
        (the grids and quality panel of a ``trainer.precision=bf16-mixed`` run sample in bf16),
        else that of the run that wrote the checkpoint (stored in it), else ``32-true``."""
        if self._sampling_precision is not None:
            return self._sampling_precision
        trainer = self.attached_trainer()
        if trainer is not None:
            precision = str(trainer.precision)
            return precision if precision in AUTOCAST_DTYPES else "32-true"
        return self._trained_precision or "32-true"

    @sampling_precision.setter
    def sampling_precision(self, precision: str | None) -> None:
        """A Lightning precision name (``32-true``, ``bf16-mixed``, ...), or None: follow the
        trainer or the checkpoint again."""
        self._sampling_precision = None if precision is None else normalize_precision(precision)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(CHECKPOINT_KEY, {}).get("precision")
        self._trained_precision = stored if stored in AUTOCAST_DTYPES else None

    def sample(
        self,
        contexts: torch.Tensor | None,
        noise: torch.Tensor | None = None,
        num_samples: int | None = None,
        sampler: Sampler | None = None,
        guidance_scale: float = 0.0,
        generator: torch.Generator | None = None,
        use_ema: bool = True,
        on_step: StepCallback | None = None,
    ) -> torch.Tensor:
        """Images in [-1, 1], (B, C, H, W), for contexts (B, K) (or None: ``num_samples`` images
        with the null context). ``noise`` (B, C, H, W) defaults to a draw from ``generator``.
        ``on_step`` is the sampler's per-step hook (progress, stop checks)."""
        if contexts is not None:
            batch = contexts.shape[0]
        elif noise is not None:
            batch = noise.shape[0]
        elif num_samples is not None:
            batch = num_samples
        else:
            raise ValueError("sample() needs contexts, noise or num_samples to know the batch size")
        if noise is None:
            device = generator.device if generator is not None else self.device
            noise = torch.randn((batch, *self.image_shape), generator=generator, device=device)
        run = self.sample_trajectory(
            contexts, noise, sampler, guidance_scale, generator, use_ema, on_step=on_step
        )
        return run.images

    def sample_trajectory(
        self,
        contexts: torch.Tensor | None,
        noise: torch.Tensor,
        sampler: Sampler | None = None,
        guidance_scale: float = 0.0,
        generator: torch.Generator | None = None,
        use_ema: bool = True,
        frame_every: int | None = None,
        on_step: StepCallback | None = None,
    ) -> Trajectory:
        """Denoise ``noise`` (N, C, H, W) given contexts (N, K) or None, timed: the one sampling
        chain behind ``sample``, the sample grids, their GIF and diffusion-sample.

        With ``frame_every`` the frames are x_T, every ``frame_every``-th step and the images
        (:meth:`Sampler.trajectory`); without, only the images are kept (one frame, t = 0).
        ``on_step(i, n, t_prev, x)`` is called after every step (progress, stop checks: an
        exception raised by it ends the chain). The NFE are counted, not taken from the sampler.
        """
        sampler = sampler or self.make_sampler()
        noise = noise.to(self.device)
        if contexts is not None:
            contexts = contexts.to(self.device)

        def run(net: EpsModel | torch.nn.Module) -> tuple[torch.Tensor, list[int]]:
            if frame_every is None:
                images = sampler.sample(net, noise, contexts, guidance_scale, generator, on_step)
                return images[None], [0]
            return sampler.trajectory(
                net, noise, frame_every, contexts, guidance_scale, generator, on_step=on_step
            )

        with self.sampling_net(use_ema) as net:
            counter = NFECounter(net)
            (frames, timesteps), seconds = timed(lambda: run(counter), self.device)
        return Trajectory(frames, timesteps, seconds, counter.calls)

    @contextmanager
    def sampling_net(self, use_ema: bool = True) -> Iterator[torch.nn.Module]:
        """The EMA (or the live) network in eval mode for the block, as the eps-model samplers take
        (a v or x0 net wrapped in :class:`EpsModel`), its forward in :attr:`sampling_precision`
        (:func:`~diffusion_lab.models.precision.in_precision`: the output cast back to fp32, so
        the conversion to eps and the samplers compute in fp32); the net's mode is restored after."""
        net = self.ema.module if use_ema else self.net
        was_training = net.training
        net.eval()
        model = in_precision(net, self.sampling_precision)
        try:
            if self.prediction == "eps":
                yield model
            else:
                yield EpsModel(model, self.prediction, self.schedule.alpha_bars).eval()
        finally:
            net.train(was_training)
