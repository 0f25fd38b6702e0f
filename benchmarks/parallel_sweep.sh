#!/usr/bin/env bash
# A 4-job tiny sweep run serially (Hydra's basic launcher) and then with hydra/launcher=parallel
# (2 jobs at once), wall time of each and the jobs' own seconds and threads from result.json.
# Run it on a quiet machine:   bash benchmarks/parallel_sweep.sh     # OUT=/tmp/parallel_sweep
set -uo pipefail
OUT=${OUT:-/tmp/parallel_sweep}; rm -rf "$OUT"; mkdir -p "$OUT"
export WANDB_MODE=offline DIFFUSION_LAB_CACHE="$OUT/cache"
SWEEP=(scheduler=linear,cosine model.n_feat=16,24)
TINY=(logger=csv trainer.max_epochs=3 callbacks.quality=null scheduler.timesteps=100
      sampler.steps=10 callbacks.samples.every_n_epochs=100 callbacks.samples.animate=false)
for launcher in basic parallel; do
  extra=(); [ "$launcher" = parallel ] && extra=(hydra/launcher=parallel)
  start=$(date +%s.%N)
  python3 -m diffusion_lab.train -m "${SWEEP[@]}" "${TINY[@]}" "${extra[@]}" \
    hydra.sweep.dir="$OUT/$launcher" > "$OUT/$launcher.out" 2>&1 \
    || { echo "$launcher failed: see $OUT/$launcher.out"; exit 1; }
  end=$(date +%s.%N)
  python3 - "$OUT/$launcher" "$launcher" "$start" "$end" <<'PY'
import json, pathlib, sys
sweep, launcher, start, end = pathlib.Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
jobs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))]
seconds = ", ".join(f"{job['seconds']:.0f}" for job in jobs)
threads = sorted({job.get("threads") for job in jobs})
print(f"| {launcher} | {len(jobs)} | {end - start:.0f} | {seconds} | {threads} |")
PY
done
