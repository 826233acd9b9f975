#!/usr/bin/env bash
# The GPU half of benchmarks/accelerator as one call on a lent GPU machine. Here, first:
#   bash ../shared/gpu/prepare.sh            (fills the ignored .gpu/: pinned wheels + the teacher as fp16, < 64 MiB)
# then, with the device tool:  command "bash benchmarks/accelerator/on-gpu.sh", carry [".gpu"], timeout_s 600.
# Results land in $OUT (they come back with the call); copy them beside this script and fill README.md.
# Training stages only: that machine's onnxruntime/torch differ from the pins, so nothing is exported there.
set -uo pipefail
source .gpu/on-device.sh || exit 9
out=${OUT:-/tmp/accelerator-out}
mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.txt" 2>&1
# GPU: the default recipe as shipped (6,000 fine-tune rows, the whole train split distilled), fp32 then bf16.
timeout 330 python3 benchmarks/accelerator/run.py --device cuda --precision fp32,bf16 --out "$out/results_gpu" \
  > "$out/gpu.log" 2>&1
grep -E '^\[|^  (teacher-finetune|distill):' "$out/gpu.log"
# The same box's CPU cores on a slice (the full CPU run would not fit one call): seconds per row compare.
timeout 200 python3 benchmarks/accelerator/run.py --device cpu --precision fp32 --max-train-samples 512 \
  --max-eval-samples 512 --out "$out/results_gpu_box_cpu" > "$out/cpu.log" 2>&1
grep -E '^\[|^  (teacher-finetune|distill):' "$out/cpu.log"
ls "$out"
