#!/usr/bin/env bash
# Everything that needs a CUDA device, in one run: the transfer, connector, CLI and README tests
# on CUDA, then `kvoff bench` on the llama-3-8b shape (LRU and ARC, three tier sizes). Results go
# to $OUT (default ./out).
# Expects kvoff importable (PYTHONPATH=python with a built _core.abi3.so, or an installed wheel).
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,pcie.link.gen.max,pcie.link.width.max,driver_version --format=csv \
  | tee "$OUT/card.txt"
python3 -c "import torch, kvoff; print('torch', torch.__version__, 'kvoff', kvoff.__version__)" \
  | tee -a "$OUT/card.txt"
# pytest-benchmark may be missing there: run without the project's addopts. The manager,
# stats and jobs tests need no GPU; they run here to check the abi3 extension under this
# machine's own Python (3.12 on the lent H100s, the wheel being built on 3.11).
python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/test_transfer*.py \
  tests/test_connector.py tests/test_cli.py tests/test_readme.py tests/test_manager_*.py \
  tests/test_stats_*.py tests/test_jobs*.py 2>&1 | tee "$OUT/pytest.log"
run() {  # name, then kvoff bench arguments
  local name=$1; shift
  python3 -m kvoff bench --preset llama-3-8b --gpu-blocks 4096 --requests 600 --no-progress \
    --json "$OUT/bench_$name.json" "$@" 2>&1 | tee "$OUT/bench_$name.txt"
}
run lru16 --cpu-gb 16 --policy lru
run arc16 --cpu-gb 16 --policy arc
# Tiers too small for the working set: evictions, and (0.25 GiB = 32 blocks, less than one long
# conversation) allocation failures.
run lru2 --cpu-gb 2 --policy lru
run lru025 --cpu-gb 0.25 --policy lru
