#!/usr/bin/env bash
# Accelerator check: sampler overhead of a CIFAR-sized UNet, Inception features/s, search candidates/min.
# Usage: bash benchmarks/gpu_check.sh   (from the repository root; prints JSON lines)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
timeout "${GPU_CHECK_TIMEOUT:-280}" python3 benchmarks/gpu_check.py "$@"
