#!/usr/bin/env bash
# Everything that needs a CUDA device, in one run; results go to $OUT (default ./out).
#   bash benches/gpu_suite.sh [table] [engine] [tests] [bench] [bench-all]
#   (default: table engine tests bench)
# table: benches/gpu_transfer.py (the transfer table: host time, idle wall-clock, both ways,
#        behind compute, canonical layout, matmul slowdown, start-up);
# engine: host time with many repeats (gpu_host_time.py), jobs by size against copy_
#        (gpu_store_sizes.py), and the llama-3-8b bench's link use per direction
#        (gpu_link_busy.py: overlap, jobs alone and beside the other direction);
# tests: the transfer, connector, CLI and README tests on CUDA, and the manager, stats and jobs
#        tests (no GPU needed: they check the abi3 extension under this machine's Python);
# bench: `kvoff bench --preset llama-3-8b --cpu-gb 16` (LRU); bench-all adds ARC and the small
#        tiers (evictions; 0.25 GiB: allocation failures).
# Expects kvoff importable (PYTHONPATH=python with a built _core.abi3.so, or an installed wheel).
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
parts=${*:-table engine tests bench}
has() { [[ " $parts " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,pcie.link.gen.max,pcie.link.width.max,driver_version --format=csv \
  | tee "$OUT/card.txt"
python3 -c "import torch, triton, kvoff; print('torch', torch.__version__, 'triton', \
triton.__version__, 'kvoff', kvoff.__version__)" | tee -a "$OUT/card.txt"
if has table; then
  python3 benches/gpu_transfer.py --out "$OUT" 2>&1 | tee "$OUT/gpu_transfer.txt"
fi
if has engine; then
  python3 benches/gpu_host_time.py --out "$OUT/host_time.json" 2>&1 | tee "$OUT/host_time.txt"
  python3 benches/gpu_store_sizes.py --out "$OUT/sizes.json" 2>&1 | tee "$OUT/sizes.txt"
  python3 benches/gpu_link_busy.py --out "$OUT/link_busy.json" -- --preset llama-3-8b \
    --gpu-blocks 4096 --requests 600 --no-progress --cpu-gb 16 --policy lru 2>&1 \
    | tee "$OUT/link_busy.txt"
fi
if has tests; then
  # pytest-benchmark may be missing there: run without the project's addopts.
  python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/test_transfer*.py \
    tests/test_connector*.py tests/test_cli*.py tests/test_readme.py tests/test_manager_*.py \
    tests/test_stats_*.py tests/test_jobs*.py 2>&1 | tee "$OUT/pytest.log"
fi
run() {  # name, then kvoff bench arguments
  local name=$1; shift
  python3 -m kvoff bench --preset llama-3-8b --gpu-blocks 4096 --requests 600 --no-progress \
    --json "$OUT/bench_$name.json" "$@" 2>&1 | tee "$OUT/bench_$name.txt"
}
if has bench || has bench-all; then
  run lru16 --cpu-gb 16 --policy lru
fi
if has bench-all; then
  run arc16 --cpu-gb 16 --policy arc
  run lru2 --cpu-gb 2 --policy lru
  run lru025 --cpu-gb 0.25 --policy lru
fi
