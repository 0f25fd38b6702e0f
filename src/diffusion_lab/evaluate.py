"""diffusion-eval: how sample quality depends on the sampler and its steps, for one checkpoint.

diffusion-eval ckpt_path=outputs/train/runs/<datetime>                    # digits, DDPM + DDIM
diffusion-eval ckpt_path=<run> n_per_class=30 'ddim_steps=[10,25,50]' 'ddim_etas=[0.0,1.0]'
diffusion-eval ckpt_path=<run> data=sprites                               # as the run was trained

1. The judge: a small CNN trained on the data's train split; its accuracy on the val split is
   reported beside every result (a judge that misreads real images cannot grade generated ones).
2. The reference: N = n_per_class x K real images from the val split, or from the train split
   when val holds fewer than 2N (so that a second, disjoint set of N real images gives the "real"
   row: what a perfect sampler would score with sets this size).
3. The study: DDPM over all T steps and DDIM at every (steps, eta) denoise the same noise into the
   same classes; each is timed, its network calls counted, and scored (class accuracy, FID, KID).
   DDIM step counts above the checkpoint's T are skipped, with a note in the log and results.md.

Into the Hydra run folder: ``results.csv`` (one row per sampler, the judge's val accuracy in every
row) and ``results.md`` (the same as a Markdown table, with the judge and the reference described),
written atomically once everything is computed. All input is checked before the judge is trained.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from diffusion_lab import CONFIG_DIR
from diffusion_lab.checkpoints import load_module, resolve_checkpoint, resolve_device
from diffusion_lab.data import DiffusionDataModule
from diffusion_lab.evaluation.classifier import (
    ImageClassifier,
    check_training_options,
    train_classifier,
    uint8_to_unit_range,
)
from diffusion_lab.evaluation.metrics import KID_SUBSETS, check_kid_subset_size
from diffusion_lab.evaluation.study import (
    ROW_FIELDS,
    SamplerSpec,
    real_row,
    run_study,
    sampler_specs,
)
from diffusion_lab.lit_module import DiffusionModule
from diffusion_lab.timing import device_name, timed
from diffusion_lab.visualize import atomic_write

log = logging.getLogger(__name__)

CSV_FILE = "results.csv"
MARKDOWN_FILE = "results.md"
CSV_FIELDS = (*ROW_FIELDS, "judge_val_accuracy", "reference")


# --- input ----------------------------------------------------------------------------------
def _as_list(value: Any) -> list:
    """A list field given as a list, or as one value (ddim_steps=25)."""
    if isinstance(value, ListConfig):
        return OmegaConf.to_container(value)
    return list(value) if isinstance(value, list | tuple) else [value]


def check_options(cfg: DictConfig) -> None:
    """n_per_class an int >= 1, seed an int >= 0, guidance_scale a finite number >= 0, use_ema and
    ddpm booleans, the judge's training options; sampler lists are checked by sampler_specs."""
    n = cfg.n_per_class
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_per_class must be an integer >= 1, got {n!r}")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {cfg.seed!r}")
    guidance = cfg.guidance_scale
    if isinstance(guidance, bool) or not isinstance(guidance, int | float) or not guidance >= 0:
        raise ValueError(f"guidance_scale must be a number >= 0, got {guidance!r}")
    if not math.isfinite(guidance):
        raise ValueError(f"guidance_scale must be finite, got {guidance!r}")
    for name in ("use_ema", "ddpm"):
        if not isinstance(cfg[name], bool):
            raise ValueError(f"{name} must be true or false, got {cfg[name]!r}")
    judge = cfg.classifier
    check_training_options(judge.epochs, judge.batch_size, judge.lr)


def check_data_matches(
    module: DiffusionModule, datamodule: DiffusionDataModule, ckpt: Path
) -> None:
    """The data must be what the checkpoint was trained on: same (C, H, W) and class names."""
    data_shape = (datamodule.channels, datamodule.image_size, datamodule.image_size)
    data_names = list(datamodule.class_names)
    model_names = module.class_names  # empty only for a module built outside diffusion-train
    names_differ = (
        data_names != model_names if model_names else len(data_names) != module.num_classes
    )
    if data_shape != tuple(module.image_shape) or names_differ:
        shown = model_names or f"{module.num_classes} unnamed classes"
        raise ValueError(
            f"the data ({datamodule.source.name}) gives images {data_shape} of the classes "
            f"{data_names}, but the checkpoint {str(ckpt)!r} was trained on images "
            f"{tuple(module.image_shape)} of the classes {shown}; pass the data options the "
            "checkpoint was trained with (e.g. data=sprites, data.image_size=...)"
        )


# --- real images ----------------------------------------------------------------------------
def labelled_images(dataset: torch.utils.data.TensorDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, C, H, W), class indices (N,)) of a split of (image, one-hot context)."""
    images, contexts = dataset.tensors
    return images, contexts.argmax(dim=1)


@dataclass
class RealSets:
    """The real images the study compares against, both float (N, C, H, W) in [-1, 1].

    ``reference`` is what every sampler's images are measured against; ``floor`` (with its class
    ``floor_labels``) is a disjoint set of real images scored like a sampler's, or None when the
    split is too small for two sets; ``split`` names where they came from and ``note`` says why.
    """

    split: str
    reference: torch.Tensor
    floor: torch.Tensor | None
    floor_labels: torch.Tensor | None
    note: str


def choose_real_sets(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_generated: int,
    seed: int,
) -> RealSets:
    """N = ``num_generated`` real images as the reference and N others as the floor, from the val
    split when it holds 2N, else from the train split (which the judge has seen).

    A split with fewer than 2N images gives a smaller reference (all it holds, up to N) and no
    floor: a floor of another size than the generated sets would not be a fair one, FID being
    biased by set size. The images are a seeded random choice: a seed always picks the same ones.
    """
    if len(val[0]) >= 2 * num_generated:
        split, (images, labels) = "val", val
        note = f"val split ({len(val[0])} images, unseen by the judge)"
    else:
        split, (images, labels) = "train", train
        note = (
            f"train split ({len(train[0])} images, which the judge was trained on): the val split "
            f"holds {len(val[0])}, fewer than 2 x {num_generated} (reference + real row)"
        )
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    reference = order[:num_generated]
    floor = order[num_generated : 2 * num_generated] if len(order) >= 2 * num_generated else None
    return RealSets(
        split=split,
        reference=uint8_to_unit_range(images[reference]),
        floor=uint8_to_unit_range(images[floor]) if floor is not None else None,
        floor_labels=labels[floor] if floor is not None else None,
        note=note,
    )


# --- output ---------------------------------------------------------------------------------
def _cell(value: Any, digits: int) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table: the real row first, then one line per sampler."""
    lines = [
        "| sampler | steps | eta | NFE | seconds | images/s | class accuracy | FID | KID (mean ± std) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = {"ddpm": "DDPM", "ddim": "DDIM"}.get(row["sampler"], row["sampler"])
        cells = [
            name,
            _cell(row["steps"], 0),
            _cell(row["eta"], 1),
            _cell(row["nfe"], 0),
            _cell(row["seconds"], 2),
            _cell(row["images_per_second"], 1),
            _cell(row["class_accuracy"], 3),
            _cell(row["fid"], 3),
            f"{row['kid_mean']:.4f} ± {row['kid_std']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(
    rows: Sequence[dict[str, Any]], cfg: DictConfig, inputs: Inputs, judge: JudgeReport, floor: str
) -> str:
    """results.md: what was compared, by which judge (and how far to trust it), then the table."""
    module = inputs.module
    lines = [
        f"# Steps vs quality: {inputs.checkpoint}",
        "",
        f"- Judge: a CNN trained on {len(inputs.train[0])} real train images "
        f"({_plural(cfg.classifier.epochs, 'epoch')}, {judge.seconds:.1f} s); "
        f"**accuracy on {len(inputs.val[0])} held-out real (val) images: {judge.accuracy:.3f}**. "
        "Class accuracy, FID and KID below are its verdicts; FID and KID are on its penultimate "
        "features, not Inception's, so they compare only with runs judged the same way.",
        f"- Generated: {cfg.n_per_class} images x {module.num_classes} classes = "
        f"{inputs.num_generated} per sampler, the same noise and contexts for every sampler "
        f"(seed {cfg.seed}), guidance {cfg.guidance_scale:g}, "
        f"{'EMA' if cfg.use_ema else 'raw'} weights, T = {module.schedule.timesteps}, "
        f"on {device_name(inputs.device)}.",
        f"- Reference: {len(inputs.real.reference)} real images from the {inputs.real.note}. "
        f"KID: {KID_SUBSETS} subsets of {cfg.kid_subset_size}.",
        f"- {floor}",
    ]
    if inputs.skipped:
        lines.append(f"- {inputs.skipped}")
    return "\n".join([*lines, "", markdown_table(rows), ""])


def write_results(
    output_dir: Path, rows: Sequence[dict[str, Any]], markdown: str, extra: dict[str, Any]
) -> tuple[Path, Path]:
    """results.csv (:data:`CSV_FIELDS`, empty for None) and results.md, each written atomically."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {key: ("" if value is None else value) for key, value in {**row, **extra}.items()}
        )
    paths = (output_dir / CSV_FILE, output_dir / MARKDOWN_FILE)
    for path, text in zip(paths, (table.getvalue(), markdown)):
        with atomic_write(path) as stream:
            stream.write(text.encode("utf-8"))
    return paths


# --- the run --------------------------------------------------------------------------------
@dataclass
class Inputs:
    """Everything the run needs, checked: the module of ``checkpoint`` on ``device``, the samplers
    (``skipped``: the note on DDIM steps above T, or ""), the labelled uint8 ``train`` and ``val``
    splits, the ``real`` sets and the number of images each sampler generates."""

    checkpoint: Path
    device: torch.device
    module: DiffusionModule
    specs: list[SamplerSpec]
    skipped: str
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    real: RealSets
    num_generated: int


@dataclass
class JudgeReport:
    """The trained judge, its accuracy on the val split and the seconds its training took."""

    classifier: ImageClassifier
    accuracy: float
    seconds: float


def load_inputs(cfg: DictConfig) -> Inputs:
    """Check every option, load the checkpoint and the data, and check that they match; nothing
    expensive happens before all of it passed."""
    check_options(cfg)
    checkpoint = resolve_checkpoint(cfg.ckpt_path)
    device = resolve_device(cfg.device)
    module = load_module(checkpoint, device)
    timesteps = module.schedule.timesteps
    specs, skipped = sampler_specs(
        timesteps, cfg.ddpm, _as_list(cfg.ddim_steps), _as_list(cfg.ddim_etas)
    )
    skipped_note = f"DDIM steps {skipped} skipped: above the checkpoint's T = {timesteps}."
    datamodule: DiffusionDataModule = instantiate(cfg.data)
    datamodule.setup()
    check_data_matches(module, datamodule, checkpoint)
    train, val = labelled_images(datamodule.train_set), labelled_images(datamodule.val_set)
    if len(val[0]) == 0:
        raise ValueError(
            "the judge needs held-out real images, but data.val_fraction=0 leaves no val split; "
            "use a data.val_fraction > 0"
        )
    num_generated = cfg.n_per_class * module.num_classes
    real = choose_real_sets(train, val, num_generated, cfg.seed)
    check_kid_subset_size(cfg.kid_subset_size, len(real.reference), num_generated)
    if skipped:
        log.warning(skipped_note)
    return Inputs(
        checkpoint=checkpoint,
        device=device,
        module=module,
        specs=specs,
        skipped=skipped_note if skipped else "",
        train=train,
        val=val,
        real=real,
        num_generated=num_generated,
    )


def train_judge(cfg: DictConfig, inputs: Inputs) -> JudgeReport:
    """The judge trained on the train split with ``cfg.classifier`` and ``cfg.seed``, checked on
    the val split."""
    (classifier, accuracy), seconds = timed(
        lambda: train_classifier(
            *inputs.train,
            *inputs.val,
            epochs=cfg.classifier.epochs,
            batch_size=cfg.classifier.batch_size,
            lr=cfg.classifier.lr,
            seed=cfg.seed,
            device=inputs.device,
            num_classes=inputs.module.num_classes,
        ),
        inputs.device,
    )
    log.info(
        "judge: val accuracy %.3f on %d real images (%.1f s)",
        accuracy,
        len(inputs.val[0]),
        seconds,
    )
    return JudgeReport(classifier, accuracy, seconds)


def floor_rows(
    cfg: DictConfig, inputs: Inputs, judge: ImageClassifier
) -> tuple[list[dict[str, Any]], str]:
    """([the real row] or [], the line of results.md that explains it)."""
    real = inputs.real
    if real.floor is None:
        return [], (
            f"No `real` row: the {real.split} split holds fewer than "
            f"2 x {inputs.num_generated} images."
        )
    row = real_row(
        judge, real.reference, real.floor, real.floor_labels, cfg.kid_subset_size, cfg.seed
    )
    note = (
        f"Row `real`: {len(real.floor)} other real images from the {real.split} split, scored "
        "like a sampler's: the floor of FID and KID for sets this size."
    )
    return [row], note


def run_evaluation(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Check the input, train the judge, run the study, then write results.csv and results.md.

    Returns the rows (the real row first when there is one), the judge's val accuracy, the
    reference split and the paths written.
    """
    inputs = load_inputs(cfg)
    judge = train_judge(cfg, inputs)
    rows, floor_note = floor_rows(cfg, inputs, judge.classifier)
    with inputs.module.sampling_net(cfg.use_ema) as net:
        rows += run_study(
            net,
            inputs.module.schedule,
            inputs.specs,
            judge.classifier,
            inputs.real.reference,
            cfg.n_per_class,
            seed=cfg.seed,
            guidance_scale=cfg.guidance_scale,
            kid_subset_size=cfg.kid_subset_size,
            device=inputs.device,
        )
    markdown = results_markdown(rows, cfg, inputs, judge, floor_note)
    extra = {"judge_val_accuracy": judge.accuracy, "reference": inputs.real.split}
    csv_path, markdown_path = write_results(Path(output_dir), rows, markdown, extra)
    print(markdown)
    log.info("wrote %s and %s", csv_path, markdown_path)
    return {
        "rows": rows,
        "judge_val_accuracy": judge.accuracy,
        "reference": inputs.real.split,
        "csv": csv_path,
        "markdown": markdown_path,
    }


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_evaluation(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
