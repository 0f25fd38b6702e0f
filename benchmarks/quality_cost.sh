#!/usr/bin/env bash
# What the in-training quality panel (callbacks.quality) adds to the default run: the default
# diffusion-train with and without it, the judge trained fresh (an empty cache), then the judge's
# training time and every panel's seconds from the run's log. Run it on a quiet machine.
#   bash benchmarks/quality_cost.sh            # OUT=/tmp/quality_cost by default
set -uo pipefail
OUT=${OUT:-/tmp/quality_cost}; mkdir -p "$OUT"
export WANDB_MODE=offline DIFFUSION_LAB_CACHE="$OUT/cache"
rm -rf "$DIFFUSION_LAB_CACHE"
for variant in with without; do
  extra=(); [ "$variant" = without ] && extra=('~callbacks.quality')
  SECONDS=0
  python3 -m diffusion_lab.train logger=csv hydra.run.dir="$OUT/$variant" "${extra[@]}" \
    > "$OUT/$variant.out" 2>&1 || { echo "$variant failed: see $OUT/$variant.out"; exit 1; }
  echo "default run $variant the quality panel: ${SECONDS} s"
done
grep -hE "judge trained|judge from the cache|quality panel after" "$OUT/with/train.log"
