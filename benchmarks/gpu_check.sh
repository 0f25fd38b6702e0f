#!/usr/bin/env bash
# One prepared GPU session: the CUDA tests, the sampling and training benchmarks, and one epoch of
# the course's sprites recipe on full-size sprites files in the real format (random pixels: it
# measures speed only).
# Run from the repository root on a machine with a GPU, torch and lightning installed; missing pure-
# Python packages (hydra-core, omegaconf, antlr4) may come as wheels in .whl/.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"

echo "== CUDA tests + core tests"
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_samplers.py tests/test_schedules.py \
  tests/test_context_unet.py tests/test_lit_module.py 2>&1 | tail -5

echo "== sampling speed (course setting: sprites 3x16x16, n_feat 64, T 500)"
python3 benchmarks/sampling_speed.py --device cuda --n 32 1024 --ddim-steps 25 50
python3 benchmarks/sampling_speed.py --device cuda --n 1024 --ddim-steps 25 --guidance 2.0

echo "== training: the course's loop, a plain loop, the Lightning pipeline and each fast path"
python3 benchmarks/compare.py --device cuda --steps 200 --warmup 20 --json "$OUT/compare-fp32.json"
python3 benchmarks/compare.py --device cuda --steps 200 --warmup 20 --precision bf16-mixed \
  --json "$OUT/compare-bf16.json"
python3 benchmarks/compare.py --device cuda --steps 100 --warmup 20 --override data.batch_size=1000 \
  --rows plain-index lightning lightning-fast --json "$OUT/compare-batch1000.json"

echo "== one epoch of experiment=sprites_course on GPU (89,400 random sprites in the course's format)"
python3 - <<'PY'
import os
import numpy as np
rng = np.random.default_rng(0)
os.makedirs("/tmp/sprites", exist_ok=True)
np.save("/tmp/sprites/sprites_1788_16x16.npy", rng.integers(0, 256, (89400, 16, 16, 3), dtype=np.uint8))
np.save("/tmp/sprites/sprite_labels_nc_1788_16x16.npy", np.eye(5)[rng.integers(0, 5, 89400)])
PY
SECONDS=0
python3 -m diffusion_lab.train experiment=sprites_course data.source.root=/tmp/sprites trainer=gpu \
  trainer.max_epochs=2 logger=csv hydra.run.dir=/tmp/sprites_run 2>&1 | grep -v -i "warn" | tail -8
echo "sprites_course 2 epochs, wall incl. start-up and the final GIF: ${SECONDS} s"
ls /tmp/sprites_run/samples /tmp/sprites_run/checkpoints
cp /tmp/sprites_run/samples/epoch_001.png /tmp/sprites_run/samples/denoising.gif "$OUT/" 2>/dev/null
python3 - <<'PY'
import csv
rows = list(csv.DictReader(open("/tmp/sprites_run/csv/metrics.csv")))
for key in ("samples/ddpm_seconds", "samples/ddim_seconds", "val/loss", "train/loss_epoch"):
    print(key, [r[key] for r in rows if r.get(key)])
PY
