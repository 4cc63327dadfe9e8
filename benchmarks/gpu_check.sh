#!/usr/bin/env bash
# One GPU pass for lcnn-audit (issue #17): CUDA-vs-CPU agreement, HVP/batched/throughput
# costs, default batch sizes, and one Markdown table for docs/benchmarks.md.
#
#   bash benchmarks/gpu_check.sh                 # on a machine with one GPU (<= 5 min)
#   bash benchmarks/gpu_check.sh --json gpu.json # also keep the raw numbers
#   bash benchmarks/gpu_check.sh --device cpu --quick   # the CPU smoke run the tests do
#
# Exit code: 0 when every agreement check passes, 1 when one fails, 124 past the 5-minute cap.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${GPU_CHECK_TIMEOUT:-300}" python "$here/gpu_check.py" "$@"
