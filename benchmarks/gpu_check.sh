#!/usr/bin/env bash
# End-to-end GPU check of the package (fp16/bf16 trainf, channels-last, compiled gated sum, one epoch of the
# main job, load_model, torchrun + NCCL), a few minutes on one GPU. Writes $OUT/gpu_check.json if $OUT is
# set, else ./gpu_check.json. Without a CUDA device: one line, exit 0. See benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh                  (CIFAR10_DIR=/path/to/cifar10 to time the real data)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "${PYTHON:-python}" "$root/benchmarks/gpu_check.py" "$@"
