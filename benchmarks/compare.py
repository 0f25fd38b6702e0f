"""Training speed, peers side by side in one process on the same data and net.

    python benchmarks/compare.py                                 # 2-core CPU, the course's setting
    python benchmarks/compare.py --device cuda --steps 200 --json results/compare-h100.json
    python benchmarks/compare.py --device cuda --precision bf16-mixed --override data.batch_size=1000
    python benchmarks/compare.py --peak                          # + GFLOP/s as a share of the peak
    python benchmarks/compare.py --peak benchmarks/results/peak-cpu.json   # the peak of peak.py

The setting is the course's: sprites-format data (random uint8 16x16x3 images, 5 one-hot classes,
written to a temporary folder as the course's .npy pair), ContextUnet n_feat 64, T 500, batch 100,
Adam 1e-3 (`experiment=sprites_course`; `--override` changes it for every row). Rows:

    course             the course notebook's loop: a Dataset of the NHWC uint8 array with a
                       per-item ToTensor + Normalize(0.5, 0.5) transform, DataLoader(shuffle),
                       10% null contexts, its perturb (with the correct sqrt(1 - ab) noise
                       coefficient), MSE, Adam
    course-bf16        the same, its forward and loss under torch.autocast(bf16)
    plain-torch        a plain PyTorch loop over the project's data path with data.loader=torch:
                       the datamodule's DataLoader, uint8 -> [-1, 1] (+ hflip) on the device,
                       context dropout, q_sample, MSE, Adam, EMA update: DiffusionModule's step
    plain-index        the same loop over data.loader=index (batches by index on the device)
    plain-bf16         plain-index, the forward and loss under torch.autocast(bf16)
    lightning-torch    DiffusionModule driven by the Lightning Trainer, built by diffusion-train's
                       own train() (progress bar, LR monitor, EMA hook, the `--logger` group: csv
                       by default; diffusion-train's default is wandb), data.loader=torch
    lightning          the same with the default data.loader=index
    lightning-fused    + module.fused_optimizer=true
    lightning-nhwc     + module.channels_last=true
    lightning-compile  + module.compile_net=true (compile time lands in the warm-up column; later
                       compiled rows reuse the kernels, and inductor caches them on disk: for a
                       cold compile time set TORCHINDUCTOR_FORCE_DISABLE_CACHES=1)
    lightning-bf16     + trainer.precision=bf16-mixed (Lightning's autocast of the step)
    lightning-bf16-nhwc  + trainer.precision=bf16-mixed module.channels_last=true
    lightning-fast     perf=fast (what conf/perf/fast.yaml turns on for this device: on a CPU
                       bf16 where native, channels-last, fused Adam, no compile; on CUDA + compile)
    lightning-fast-bf16  perf=fast trainer.precision=bf16-mixed (bf16 whatever the detection says)
    lightning-fast-fp32  perf=fast trainer.precision=32-true
    lightning-fast-compile  perf=fast module.compile_net=true (what compile adds on this device)
    lightning-tqdm     the default row with a TQDM progress bar refreshed every 50 steps instead of
                       Rich's (which reads the logged loss, a device sync on CUDA, every step)

Each row runs `--warmup` steps, then is timed over `--steps` more (steady state, the device
synchronised at both ends); a Lightning row is timed inside its fit, from the end of its last
warm-up batch to the end of its last batch, so start-up, the sanity check, validation, grids and
checkpoints are not in it (`--extras` times on their own a validation pass, one grid of both
samplers, the GIF's chains sampled apart (what a run stopped before its last epoch pays; a finished
run records them while sampling its last grid) and a checkpoint save). "vs plain" divides by the
plain row with the same data loader (the fp32 plain row unless --precision says otherwise). Peak
memory is the CUDA allocator's peak per row (not measured on CPU).

GFLOP/s: the FLOPs of one training step (the net's forward and backward on one batch, as
torch.utils.flop_counter.FlopCounterMode counts them: matmuls and convolutions; Adam, EMA and the
data path are not counted) times the steps, over the steady seconds. With --peak, "% peak" divides
it by the device's matmul peak in the row's precision (benchmarks/peak.py: fp32 for 32-true rows,
bf16 for bf16-mixed rows), measured in this process before the rows, or read from peak.py's JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from diffusion_lab import CONFIG_DIR
from diffusion_lab.data import IndexLoader
from diffusion_lab.data.datamodule import to_model_input
from diffusion_lab.models import ContextUnet
from diffusion_lab.train import build_module, train
from diffusion_lab.utils.io import write_json
from diffusion_lab.utils.timing import device_name, synchronize, timed

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/peak.py, beside this file
import peak  # noqa: E402

SPRITES_IMAGES = "sprites_1788_16x16.npy"
SPRITES_LABELS = "sprite_labels_nc_1788_16x16.npy"
ROWS: dict[str, tuple[str, list[str]]] = {
    "course": ("course", []),
    "course-bf16": ("course", ["trainer.precision=bf16-mixed"]),
    "plain-torch": ("plain", ["data.loader=torch"]),
    "plain-index": ("plain", ["data.loader=index"]),
    "plain-bf16": ("plain", ["data.loader=index", "trainer.precision=bf16-mixed"]),
    "lightning-torch": ("lightning", ["data.loader=torch"]),
    "lightning": ("lightning", []),
    "lightning-fused": ("lightning", ["module.fused_optimizer=true"]),
    "lightning-nhwc": ("lightning", ["module.channels_last=true"]),
    "lightning-compile": ("lightning", ["module.compile_net=true"]),
    "lightning-bf16": ("lightning", ["trainer.precision=bf16-mixed"]),
    "lightning-bf16-nhwc": (
        "lightning",
        ["trainer.precision=bf16-mixed", "module.channels_last=true"],
    ),
    "lightning-fast": ("lightning", ["perf=fast"]),
    "lightning-fast-bf16": ("lightning", ["perf=fast", "trainer.precision=bf16-mixed"]),
    "lightning-fast-fp32": ("lightning", ["perf=fast", "trainer.precision=32-true"]),
    "lightning-fast-compile": ("lightning", ["perf=fast", "module.compile_net=true"]),
    "lightning-tqdm": (
        "lightning",
        [
            "callbacks.progress._target_=lightning.pytorch.callbacks.TQDMProgressBar",
            "+callbacks.progress.refresh_rate=50",
        ],
    ),
}


# --- data and config ------------------------------------------------------------------------------


def write_sprites(root: Path, count: int, seed: int = 0) -> None:
    """The course's .npy pair: (count, 16, 16, 3) uint8 NHWC and (count, 5) float64 one-hot."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / SPRITES_IMAGES, rng.integers(0, 256, (count, 16, 16, 3), dtype=np.uint8))
    np.save(root / SPRITES_LABELS, np.eye(5)[rng.integers(0, 5, count)])


def compose_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """conf/train.yaml with ``overrides``, as diffusion-train's main() gets it: without the
    hydra node, whose ${hydra:...} values (the run folder: run_dir) HydraConfig answers."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.override_dirname = "compare"
        HydraConfig.instance().set_config(cfg)
        del cfg["hydra"]
    return cfg


def base_overrides(args: argparse.Namespace, data_root: Path) -> list[str]:
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    return [
        "experiment=sprites_course",
        f"data.source.root={data_root}",
        f"trainer.accelerator={accelerator}",
        "trainer.devices=1",
        *([f"trainer.precision={args.precision}"] if args.precision else []),
        f"logger={args.logger}",
        *args.override,
    ]


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast for the plain loops when Lightning would use bf16-mixed."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def step_flops(cfg: DictConfig, device: torch.device) -> int:
    """FLOPs of one training step's network work: forward, MSE and backward of the configured net
    on one batch (FlopCounterMode: matmuls and convolutions), in fp32 (bf16 does the same FLOPs)."""
    torch.manual_seed(0)
    net = instantiate(cfg.model).to(device)
    batch, channels, size = cfg.data.batch_size, cfg.data.channels, cfg.data.image_size
    x = torch.randn(batch, channels, size, size, device=device)
    t = torch.rand(batch, device=device)
    context = torch.zeros(batch, cfg.model.n_cfeat, device=device)

    def step() -> None:
        F.mse_loss(net(x, t, context), x).backward()

    return peak.counted_flops(step)


def peak_memory_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def time_loop(step: Callable[[], None], warmup: int, steps: int, device: torch.device):
    """(warm-up seconds, steady seconds) of ``warmup`` then ``steps`` calls of ``step``."""

    def run(count: int) -> None:
        for _ in range(count):
            step()

    return timed(lambda: run(warmup), device)[1], timed(lambda: run(steps), device)[1]


def endless(loader):
    """Batches of ``loader``, epoch after epoch."""
    while True:
        yield from loader


# --- (a) the course's loop ------------------------------------------------------------------------


class CourseSprites(Dataset):
    """The course's CustomDataset: per item, the transform of one NHWC image and its label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels
        self.transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]  # [0, 1] -> [-1, 1]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.transform(self.images[index])
        label = torch.tensor(self.labels[index]).to(torch.int64)
        return image, label


def course_row(cfg: DictConfig, args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    """The course's loop (its schedule: beta linear on T + 1 points, ab by cumsum of logs)."""
    device = torch.device(args.device)
    images = np.load(data_root / SPRITES_IMAGES)
    labels = np.load(data_root / SPRITES_LABELS)
    batch_size = cfg.data.batch_size
    loader = DataLoader(CourseSprites(images, labels), batch_size=batch_size, shuffle=True)
    timesteps = cfg.scheduler.timesteps
    b_t = (0.02 - 1e-4) * torch.linspace(0, 1, timesteps + 1, device=device) + 1e-4
    ab_t = torch.cumsum((1 - b_t).log(), dim=0).exp()
    ab_t[0] = 1
    torch.manual_seed(cfg.seed)
    model = cfg.model
    net = ContextUnet(model.in_channels, model.n_feat, model.n_cfeat, model.height, norm=model.norm)
    net = net.to(device)
    optim = torch.optim.Adam(net.parameters(), lr=cfg.module.optimizer.lr)
    batches = endless(loader)

    def step() -> None:
        x, c = next(batches)
        optim.zero_grad()
        x = x.to(device)
        c = c.to(x)
        context_mask = torch.bernoulli(torch.zeros(c.shape[0]) + 0.9).to(device)
        c = c * context_mask.unsqueeze(-1)
        noise = torch.randn_like(x)
        t = torch.randint(1, timesteps + 1, (x.shape[0],)).to(device)
        ab = ab_t[t, None, None, None]
        x_pert = ab.sqrt() * x + (1 - ab).sqrt() * noise  # the course has (1 - ab): a known bug
        with autocast(device, cfg.trainer.precision):
            pred_noise = net(x_pert, t / timesteps, c)
            loss = F.mse_loss(pred_noise.float(), noise)
        loss.backward()
        optim.step()

    warmup_s, steady_s = time_loop(step, args.warmup, args.steps, device)
    return {"warmup_s": warmup_s, "steady_s": steady_s}


# --- (b) a plain loop over the project's data path ------------------------------------------------


def plain_row(cfg: DictConfig, args: argparse.Namespace) -> dict[str, Any]:
    """DiffusionModule's training step written out, over the project's datamodule."""
    device = torch.device(args.device)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg).to(device)
    net, ema, schedule = module.net, module.ema, module.schedule.to(device)
    optimizer = instantiate(cfg.module.optimizer)(params=net.parameters())
    if datamodule.loader == "index":  # what train_dataloader() builds under a trainer on `device`
        loader = IndexLoader(
            datamodule.train_set.tensors,
            cfg.data.batch_size,
            shuffle=True,
            seed=cfg.seed,
            device=device,
        )
    else:
        loader = datamodule.train_dataloader()
    batches = endless(loader)
    dropout, timesteps = cfg.module.context_dropout, schedule.timesteps

    def step() -> None:
        images, contexts = (tensor.to(device) for tensor in next(batches))
        images = to_model_input(images, hflip=datamodule.hflip)
        drop = torch.rand(contexts.shape[0], device=device) < dropout
        contexts = contexts.masked_fill(drop[:, None], 0.0)
        t = torch.randint(1, timesteps + 1, (images.shape[0],), device=device)
        noise = torch.randn_like(images)
        with autocast(device, cfg.trainer.precision):
            eps = net(schedule.q_sample(images, t, noise), t.to(images.dtype) / timesteps, contexts)
            loss = F.mse_loss(eps.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update_parameters(net)

    warmup_s, steady_s = time_loop(step, args.warmup, args.steps, device)
    return {"warmup_s": warmup_s, "steady_s": steady_s}


# --- (c, d) DiffusionModule in the Lightning Trainer ----------------------------------------------


class StepClock(L.Callback):
    """Times batches warmup .. warmup + steps - 1 of a fit (end of batch to end of batch) and
    keeps the trainer; the newest instance is `StepClock.latest` (Hydra builds it in train())."""

    latest: StepClock | None = None

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.started = self.warm = self.done = None
        self.trainer: L.Trainer | None = None
        StepClock.latest = self

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step not in (self.warmup, self.warmup + self.steps):
            return
        synchronize(pl_module.device)
        if trainer.global_step == self.warmup:
            self.warm = time.perf_counter()
        else:
            self.done = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.trainer = trainer


def timing_overrides(args: argparse.Namespace) -> list[str]:
    """What a Lightning row changes in diffusion-train's config: stop after warmup + steps,
    no validation, grids, quality panel or checkpoints (timed apart by --extras), and the clock."""
    clock = f"{StepClock.__module__}.StepClock"
    return [
        f"++trainer.max_steps={args.warmup + args.steps}",
        "++trainer.limit_val_batches=0",
        "++trainer.num_sanity_val_steps=0",
        "++trainer.enable_checkpointing=false",
        "~callbacks.samples",
        "~callbacks.quality",
        "~callbacks.checkpoint",
        "optimized_metric=train/loss",  # no validation: the run's result names a metric it logs
        f"+callbacks.clock={{_target_: {clock}, warmup: {args.warmup}, steps: {args.steps}}}",
    ]


def lightning_fit(cfg: DictConfig) -> StepClock:
    """diffusion-train's own train() on ``cfg`` (composed with `timing_overrides`)."""
    train(cfg)
    clock = StepClock.latest
    if clock is None or clock.done is None:
        raise RuntimeError(
            "the fit ended before its last timed step: fewer batches than --warmup + --steps "
            "in an epoch? (use more --images)"
        )
    return clock


def lightning_row(cfg: DictConfig, args: argparse.Namespace) -> dict[str, Any]:
    clock = lightning_fit(cfg)
    return {"warmup_s": clock.warm - clock.started, "steady_s": clock.done - clock.warm}


def extras(cfg: DictConfig, samples_cfg: DictConfig) -> dict[str, float]:
    """Seconds of what the steady state leaves out, on the default Lightning pipeline."""
    trainer = lightning_fit(cfg).trainer
    module, datamodule = trainer.lightning_module, trainer.datamodule
    samples = instantiate(samples_cfg)
    samples.setup(trainer, module, "fit")
    samples.on_fit_start(trainer, module)
    device = module.device
    results = {}
    trainer.limit_val_batches = 1.0  # the fit ran without validation
    results["validation_pass_s"] = timed(
        lambda: trainer.validate(module, datamodule=datamodule, verbose=False), device
    )[1]

    def grid() -> None:  # what SampleGrids samples each grid epoch (the picture aside)
        for sampler in samples.samplers.values():
            module.sample_trajectory(
                samples.contexts, samples.noise, sampler, samples.guidance_scale
            )

    results["epoch_grid_s"] = timed(grid, device)[1]
    results["final_gif_s"] = timed(lambda: samples.animation(module), device)[1]
    path = Path(HydraConfig.get().runtime.output_dir) / "extras.ckpt"
    results["checkpoint_save_s"] = timed(lambda: trainer.save_checkpoint(path), device)[1]
    return results


# --- the table ------------------------------------------------------------------------------------


def summarise(
    rows: dict[str, dict[str, Any]],
    batch_size: int,
    steps: int,
    peaks: dict[str, Any] | None = None,
) -> None:
    """Adds images/s, ms/step, GFLOP/s (from each row's ``flops_per_step``), the share of the
    matmul peak in the row's precision (``peaks``: peak.py's result) and the ratios, in place."""
    for row in rows.values():
        row["ms_per_step"] = 1000 * row["steady_s"] / steps
        row["images_per_s"] = batch_size * steps / row["steady_s"]
        row["gflops"] = row["flops_per_step"] * steps / row["steady_s"] / 1e9
        dtype = "bf16" if str(row["precision"]).startswith("bf16") else "fp32"
        row["peak_fraction"] = row["gflops"] / peaks["matmul"][dtype] if peaks else None
    course = rows.get("course")
    for row in rows.values():
        row["vs_course"] = row["images_per_s"] / course["images_per_s"] if course else None
        plain = rows.get(f"plain-{row['loader']}")
        row["vs_plain"] = row["images_per_s"] / plain["images_per_s"] if plain else None


def table(rows: dict[str, dict[str, Any]]) -> str:
    def number(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        "| row | precision | images/s | ms/step | warm-up s | vs course | vs plain | GFLOP/s "
        "| % peak | peak MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        fraction = row["peak_fraction"]
        cells = [
            name,
            str(row["precision"]),
            number(row["images_per_s"], ",.0f"),
            number(row["ms_per_step"], ".1f"),
            number(row["warmup_s"], ".1f"),
            number(row["vs_course"], ".2f") + ("x" if row["vs_course"] else ""),
            number(row["vs_plain"], ".3f") + ("x" if row["vs_plain"] else ""),
            number(row["gflops"], ",.1f"),
            number(None if fraction is None else 100 * fraction, ".0f"),
            number(row["peak_mib"], ",.0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile)")
    parser.add_argument("--images", type=int, default=89_400, help="size of the random set")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument(
        "--precision",
        choices=["32-true", "bf16-mixed"],
        help="trainer.precision of every row without its own (default: the config's)",
    )
    parser.add_argument(
        "--peak",
        nargs="?",
        const="measure",
        help="the %% of the matmul peak per row: measured here (peak.py's defaults) or PATH, "
        "peak.py's --json",
    )
    parser.add_argument("--logger", default="csv", help="logger group for the Lightning rows")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    parser.add_argument("--extras", action="store_true", help="also time validation, grids, GIF")
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for all rows")
    parser.add_argument("--json", type=Path, help="write the rows and the setting here")
    return peak.checked(parser, parser.parse_args(argv), ("steps", "warmup", "images"))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    peaks = None
    if args.peak == "measure":
        peaks = peak.measure(peak.parse_args(["--device", args.device]))
    elif args.peak:
        peaks = json.loads(Path(args.peak).read_text())
    flops_cache: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="compare-") as folder:
        data_root = Path(folder) / "sprites"
        write_sprites(data_root, args.images)
        rows: dict[str, dict[str, Any]] = {}
        setting = None
        for name in args.rows:
            driver, overrides = ROWS[name]
            extra_overrides = timing_overrides(args) if driver == "lightning" else []
            cfg = compose_config(
                Path(folder) / name, base_overrides(args, data_root) + overrides + extra_overrides
            )
            batch_size = cfg.data.batch_size
            setting = setting or {
                "batch_size": batch_size,
                "n_feat": cfg.model.n_feat,
                "image": [cfg.data.channels, cfg.data.image_size, cfg.data.image_size],
                "timesteps": cfg.scheduler.timesteps,
            }
            reset_peak_memory(device)
            run = {"course": course_row, "plain": plain_row, "lightning": lightning_row}[driver]
            row = run(cfg, args, data_root) if driver == "course" else run(cfg, args)
            row |= {"driver": driver, "overrides": overrides, "peak_mib": peak_memory_mib(device)}
            row["loader"] = "course" if driver == "course" else cfg.data.loader
            row["precision"] = str(cfg.trainer.precision)
            key = repr((dict(cfg.model), cfg.data.batch_size))
            flops_cache.setdefault(key, step_flops(cfg, device))
            row["flops_per_step"] = flops_cache[key]
            rows[name] = row
            print(f"{name}: {1000 * row['steady_s'] / args.steps:.1f} ms/step", flush=True)
        summarise(rows, batch_size, args.steps, peaks)
        extra = None
        if args.extras:
            overrides = base_overrides(args, data_root)
            samples_cfg = compose_config(Path(folder) / "extras", overrides).callbacks.samples
            cfg = compose_config(Path(folder) / "extras", overrides + timing_overrides(args))
            extra = extras(cfg, samples_cfg)
    result = {
        "device": device_name(device),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "precision": args.precision,
        "steps": args.steps,
        "warmup": args.warmup,
        "images": args.images,
        "overrides": args.override,
        "setting": setting,
        "peaks": peaks,
        "rows": rows,
        "extras": extra,
    }
    print(f"\ndevice: {result['device']}; torch {result['torch']}, lightning {result['lightning']}")
    print(f"setting: {setting}, {args.steps} timed steps per row")
    if peaks:
        print(peak.table(peaks))
    print(table(rows))
    if extra:
        print(
            "apart from the steady state (s): "
            + ", ".join(f"{k} {v:.2f}" for k, v in extra.items())
        )
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
