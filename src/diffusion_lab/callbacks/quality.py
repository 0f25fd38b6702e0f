"""QualityPanel: sample quality during training, scored exactly as diffusion-eval scores it.

Every N epochs (and after the last) a fixed panel of samplers denoises fixed noise into
``n_per_class`` images of every class, and the judge (trained once per data set and split, from
the judge cache) scores each: ``quality/<name>/class_acc``, ``quality/<name>/fid`` and
``quality/<name>/kid`` (plus ``/seconds`` and ``/nfe``) go to ``pl_module.log``, so every logger
and ``trainer.callback_metrics`` (a sweep's optimised metric) have them. The scoring is
``evaluation.run_study``, the same function diffusion-eval runs: for the same checkpoint, noise,
sampler and options the numbers are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L

from diffusion_lab.callbacks.epochs import is_due, is_last_epoch
from diffusion_lab.callbacks.preemption import check_stop
from diffusion_lab.diffusion import NoiseSchedule, Sampler
from diffusion_lab.evaluation.classifier import MIN_HEIGHT
from diffusion_lab.evaluation.judge_cache import Judge, JudgeOptions
from diffusion_lab.evaluation.metrics import feature_extractor
from diffusion_lab.evaluation.panel import PanelEntry
from diffusion_lab.evaluation.real_sets import RealSets
from diffusion_lab.evaluation.setup import study_judge, study_sets
from diffusion_lab.evaluation.study import run_study
from diffusion_lab.utils.checks import InputError, require_choice, require_int
from diffusion_lab.utils.progress import ProgressFactory, track, trainer_progress
from diffusion_lab.utils.timing import timed

log = logging.getLogger(__name__)

METRIC_DIRECTIONS = ("minimize", "maximize")
SamplerFactory = Callable[[NoiseSchedule], Sampler] | Mapping[str, Any]


class QualityPanel(L.Callback):
    """Class accuracy, FID and KID of a panel of samplers during training.

    Args:
        sampler: the sampler scored every ``every_n_epochs`` epochs and after the last: a partial
            taking the noise schedule (what Hydra makes of a conf/sampler config) or such a config.
            By default the sampler group's (DDIM at its steps, eta 0).
        sampler_name: its name in the metrics (by default the sampler group's choice: ddim).
        samplers: more samplers (name -> partial or config) scored like ``sampler``.
        final_samplers: name -> sampler, after the last epoch only (DDPM at T: T network calls).
            A name already in ``samplers`` is not run twice.
        final_in_multirun: run ``final_samplers`` in a multirun's jobs too. Off by default: in
            a short sweep job the final DDPM-T panel is most of the job's time (a 1-epoch digits
            job: 60 of 95 s), and a sweep ranks its jobs by ``metric`` (the sampler group's).
        multirun: whether this run is a multirun's job (``${hydra_multirun:${hydra:mode}}``).
        every_n_epochs: score after every N-th epoch (and always after the last).
        n_per_class: images per class and sampler (N = n_per_class x classes).
        seed: seeds the noise, the real reference images, KID's subsets and the judge.
        guidance_scale: classifier-free guidance w of every sampler.
        use_ema: sample with the EMA weights (as the checkpoints' samples are).
        kid_subset_size: images per KID subset; lowered (with a warning) to the set sizes.
        features: FID and KID on the judge's features ("judge") or Inception-v3's
            ("inception", needs the ``inception`` extra), as diffusion-eval's ``features``.
        classifier: the judge's ``epochs``, ``batch_size``, ``lr`` and ``cache_dir`` (None: no
            cache), as diffusion-eval's ``classifier``.
        metric, metric_direction: what a sweep should optimise (read by the training config's
            ``optimized_metric``); kept here beside the metrics it names.
    """

    def __init__(
        self,
        sampler: SamplerFactory | None = None,
        sampler_name: str = "ddim",
        samplers: Mapping[str, SamplerFactory] | None = None,
        final_samplers: Mapping[str, SamplerFactory] | None = None,
        every_n_epochs: int = 10,
        n_per_class: int = 20,
        seed: int = 0,
        guidance_scale: float = 0.0,
        use_ema: bool = True,
        kid_subset_size: int = 100,
        classifier: Mapping[str, Any] | None = None,
        metric: str = "quality/ddim/fid",
        metric_direction: str = "minimize",
        features: str = "judge",
        final_in_multirun: bool = False,
        multirun: bool = False,
    ) -> None:
        require_int("callbacks.quality.every_n_epochs", every_n_epochs, minimum=1)
        require_int("callbacks.quality.n_per_class", n_per_class, minimum=1)
        require_choice("callbacks.quality.metric_direction", metric_direction, METRIC_DIRECTIONS)
        panel = {sampler_name: sampler} if sampler is not None else {}
        panel.update({name: f for name, f in (samplers or {}).items() if f is not None})
        if not panel:
            raise ValueError(
                "callbacks.quality has no sampler to score; give sampler (e.g. ${sampler}) or "
                "samplers (name -> partial sampler config)"
            )
        classifier = dict(classifier or {})
        self.cache_dir = classifier.pop("cache_dir", None)
        self.judge_options = JudgeOptions(**classifier, seed=seed)
        self.factories = panel
        self.final_factories = {
            name: factory
            for name, factory in (final_samplers or {}).items()
            if name not in self.factories and factory is not None
        }
        if multirun and not final_in_multirun and self.final_factories:
            log.info(
                "callbacks.quality: final_samplers (%s) skipped in this multirun job "
                "(callbacks.quality.final_in_multirun=true runs them)",
                ", ".join(self.final_factories),
            )
            self.final_factories = {}
        self.every_n_epochs, self.n_per_class, self.seed = every_n_epochs, n_per_class, seed
        self.guidance_scale, self.use_ema = guidance_scale, use_ema
        self.kid_subset_size = kid_subset_size
        self.features = feature_extractor(features)
        self.metric, self.metric_direction = metric, metric_direction
        self.judge: Judge | None = None
        self.real: RealSets | None = None
        self.enabled = True
        self.last_rows: dict[str, dict[str, Any]] = {}

    # --- set-up ------------------------------------------------------------------------
    @staticmethod
    def _build(pl_module, factory: SamplerFactory) -> Sampler:
        if isinstance(factory, Mapping):
            return pl_module.make_sampler(factory)
        return factory(pl_module.schedule)

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        height = pl_module.image_shape[1]
        if height < MIN_HEIGHT or pl_module.num_classes < 2:
            log.warning(
                "callbacks.quality is off for this run: its judge needs images of at least "
                "%dx%d and 2 classes, the data has %dx%d and %d",
                MIN_HEIGHT,
                MIN_HEIGHT,
                height,
                height,
                pl_module.num_classes,
            )
            self.enabled = False
        # build now, so that a bad sampler option fails before the first epoch, not after it
        self.samplers = {n: self._build(pl_module, f) for n, f in self.factories.items()}
        self.final_samplers = {
            n: self._build(pl_module, f) for n, f in self.final_factories.items()
        }

    def _prepare(self, trainer: L.Trainer, pl_module) -> bool:
        """The judge and the real reference images, once; False (with a warning) when the
        datamodule cannot give a held-out split to check the judge on."""
        if self.judge is not None:
            return True
        datamodule = getattr(trainer, "datamodule", None)
        class_names = pl_module.class_names or list(getattr(datamodule, "class_names", []))
        try:
            sets = study_sets(
                getattr(datamodule, "train_set", None),
                getattr(datamodule, "val_set", None),
                class_names,
                self.n_per_class,
                self.seed,
                self.kid_subset_size,
                lower_kid_subset=True,
            )
        except InputError as error:  # no held-out split: the run goes on without the panel
            log.warning("callbacks.quality is off for this run: %s", error)
            self.enabled = False
            return False
        self.real, self.kid_subset_size = sets.real, sets.kid_subset_size
        self.judge = study_judge(
            sets,
            self.judge_options,
            self.cache_dir,
            pl_module.device,
            metadata={"data": pl_module.hparams.get("data")},
            progress=trainer_progress(trainer),
        )
        val = sets.val
        log.info(
            "quality judge: val accuracy %.3f on %d real images (%s)",
            self.judge.accuracy,
            len(val[0]),
            f"trained in {self.judge.seconds:.1f} s" if self.judge.trained else "from the cache",
        )
        pl_module.log("quality/judge_val_accuracy", self.judge.accuracy, rank_zero_only=True)
        return True

    # --- every N epochs ---------------------------------------------------------------
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        last = is_last_epoch(trainer)
        if (
            not self.enabled
            or not is_due(trainer, self.every_n_epochs)
            or not trainer.is_global_zero
        ):
            return
        if not self._prepare(trainer, pl_module):
            return
        panel = {**self.samplers, **(self.final_samplers if last else {})}
        _, seconds = timed(
            lambda: self.score(pl_module, panel, trainer_progress(trainer)), pl_module.device
        )
        # the whole panel's cost (a sweep summary's quality/seconds column)
        pl_module.log("quality/seconds", seconds, rank_zero_only=True)
        log.info(
            "quality panel after epoch %d (%s): %.1f s, sampling and scoring",
            trainer.current_epoch,
            ", ".join(panel),
            seconds,
        )

    def score(
        self, pl_module, panel: Mapping[str, Sampler], progress: ProgressFactory = track
    ) -> dict[str, dict[str, Any]]:
        """Run the study on ``panel`` (name -> sampler) and log each entry's scores; the
        sampling's progress goes to ``progress`` (in training: the trainer's display or log
        lines). Every chain stops between two steps once a preemption signal arrived
        (``check_stop`` raises ``Preempted``; ``Preemption.on_exception`` saves the checkpoint)."""
        entries = [(PanelEntry(name), sampler) for name, sampler in panel.items()]
        with pl_module.sampling_net(self.use_ema) as net:
            rows = run_study(
                net,
                entries,
                self.judge.classifier,
                self.real.reference,
                self.n_per_class,
                seed=self.seed,
                guidance_scale=self.guidance_scale,
                kid_subset_size=self.kid_subset_size,
                device=pl_module.device,
                progress=progress,
                features=self.features,
                on_step=check_stop,  # SIGTERM during the panel: stop within a step (Preemption)
            )
        for name, row in zip(panel, rows):
            metrics = {
                "class_acc": row["class_accuracy"],
                "fid": row["fid"],
                "kid": row["kid_mean"],
                "seconds": row["seconds"],
                "nfe": float(row["nfe"]),
            }
            for key, value in metrics.items():
                pl_module.log(f"quality/{name}/{key}", value, rank_zero_only=True)
            self.last_rows[name] = row
        return self.last_rows
