#!/usr/bin/env bash
# Train on a GPU for a few epochs through seglib's training loop and print the throughput.
#
#   bench/gpu_check.sh [--rows 500000] [--epochs 3] [--batch-size 4096]
#
# Run it on any machine with an NVIDIA GPU and Java 17 (sets up .venv with scripts/setup.sh when
# there is none). It checks CUDA is visible to PyTorch, then measures, in one run:
#   (a) a plain PyTorch loop over a tensor on the GPU (the limit),
#   (b) seglib's rank loop (Petastorm shard cached on the GPU, torch.distributed with NCCL) on one GPU,
#       with the default precision (bfloat16 where supported) and with loss-scaled float16,
#   (c) the same plain loop on the CPU, for the GPU / CPU ratio,
# and, when Horovod was built with CUDA (HOROVOD_GPU_OPERATIONS=NCCL), the Horovod launcher on all GPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
  scripts/setup.sh
fi
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L; then
  echo "gpu_check: no NVIDIA GPU visible on this machine" >&2
  exit 1
fi
exec .venv/bin/python bench/gpu_check.py "$@"
