#!/usr/bin/env bash
# GPU readiness in one go, on a CUDA machine (about 5-8 minutes on one GPU):
#   1. the CUDA exactness tests: every head against transformers in float32 and bfloat16 on CUDA,
#      and the packed forward (variable-length flash attention) in bfloat16, float16 and float32;
#   2. served throughput in bfloat16 and float16, default encoder and a random bert-base-sized one,
#      printed as fractions of the encoder's padded and unpadded ceilings (benchmarks/bench_throughput.py).
# usage: bash benchmarks/gpu_check.sh [OUT_DIR]     (run from the repository root, project venv active)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/bertserve-gpu-check}
mkdir -p "$OUT"
python - <<'EOF' || { echo "no CUDA device: nothing to check"; exit 2; }
import sys, torch
sys.exit(0 if torch.cuda.is_available() else 1)
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

echo "== 1. CUDA exactness tests"
timeout 300 python -m pytest -q -p no:cacheprovider -k "cuda" tests/test_packed.py tests/test_sentiment_exact.py \
    tests/test_fill_mask_exact.py tests/test_next_sentence_exact.py tests/test_question_answering_exact.py \
    2>&1 | tee "$OUT/tests.txt" | tail -15
status=${PIPESTATUS[0]}

echo "== 2. throughput on CUDA"
for model in "" "--random-base"; do
  for dtype in bfloat16 float16; do
    name="${dtype}${model:+-base}"
    echo "-- $name"
    timeout 240 python benchmarks/bench_throughput.py --device cuda --dtype "$dtype" $model \
        --requests 4000 --concurrency 256 --batch 128 2>&1 | grep -v "^Loading" | tee "$OUT/throughput-$name.txt"
  done
done
echo "results in $OUT (tests exit status $status)"
exit "$status"
