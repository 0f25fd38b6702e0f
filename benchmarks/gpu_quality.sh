#!/usr/bin/env bash
# Longer training on one GPU, then the steps-vs-quality study: how much do more epochs and a wider
# net buy on the digits, and where does DDIM's quality meet DDPM's? Results land in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_quality}; mkdir -p "$OUT"
source "$(dirname "$0")/device_env.sh"
EPOCHS=${EPOCHS:-200}
SECONDS=0
python3 -m diffusion_lab.train trainer=gpu logger=csv model.n_feat=64 trainer.max_epochs="$EPOCHS" \
  callbacks.samples.every_n_epochs=100 hydra.run.dir=/tmp/digits_gpu 2>&1 | grep -E "final metrics|Error" 
echo "training: ${SECONDS} s"
cp /tmp/digits_gpu/samples/epoch_$(printf %03d $((EPOCHS - 1))).png "$OUT/" 2>/dev/null
SECONDS=0
python3 -m diffusion_lab.evaluate ckpt_path=/tmp/digits_gpu hydra.run.dir=/tmp/eval_gpu n_per_class=100 \
  'ddim_steps=[10,25,50,100,500]' 'ddim_etas=[0.0,1.0]' kid_subset_size=100 2>&1 | grep -v -i warn | tail -30
echo "evaluation: ${SECONDS} s"
cp /tmp/eval_gpu/results.md /tmp/eval_gpu/results.csv "$OUT/" 2>/dev/null
