#!/usr/bin/env bash
# freqjax's GPU figures on one GPU in under 10 minutes: the DFM engine against the naive loop
# and plain inference (32 px and 224 px), training throughput (fp32 and bf16), and the fast
# DFM searches against the exhaustive ranking on a Syn-1 small run trained first.
#
#   bash launch/gpu_bench.sh [OUTDIR]        # default OUTDIR: $OUT or ./gpu_bench_out
#
# Each benchmark's log goes to OUTDIR/<name>.log; OUTDIR/figures.jsonl collects their last
# lines (one JSON object each). Needs jax with CUDA (pip install -e '.[cuda]'); on a machine
# without tensorflow-datasets it still runs (the benchmarks use random data).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-gpu_bench_out}}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
"$PY" -c 'import jax; print("devices:", jax.devices())' 2>&1 | tee "$OUTDIR/devices.log"

run() {  # name, time limit (s), command...
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  timeout "$limit" "$PY" "$@" > "$OUTDIR/$name.log" 2>&1
  echo "exit $?" >> "$OUTDIR/$name.log"
  grep -v '^[IWE][0-9]' "$OUTDIR/$name.log" | tail -n 14
}

run dfm_r18_32px 70 launch/bench_dfm.py --model=resnet18 --width=1 --image_size=32 \
  --patch_size=1 --images_per_class=100 --naive_candidates=32
run dfm_r18_224px_p7 90 launch/bench_dfm.py --model=resnet18 --width=1 --image_size=224 \
  --patch_size=7 --images_per_class=50 --engine_candidates=256 --naive_candidates=8
run train_r18_32px 50 launch/bench_train.py --config=configs/synthetic.py:syn1 \
  --config.train.batch_size=256
run train_r18_224px_bf16 60 launch/bench_train.py --config=configs/imagenet10.py:resnet18 \
  --config.train.batch_size=128 --config.model.dtype=bfloat16
# The DFM search methods against the exhaustive ranking, on a Syn-1 small run trained here
# (outside OUTDIR: its checkpoints need not come back).
RUNS=${RUNS:-${TMPDIR:-/tmp}/freqjax_gpu_bench_runs}
run search_train_syn1 240 launch/train.py --config=configs/synthetic.py:syn1_small \
  --workdir="$RUNS/syn1_small" --config.train.progress=False
run search_syn1 240 launch/bench_search.py --config=configs/synthetic.py:syn1_small \
  --workdir="$RUNS/syn1_small" --config.train.progress=False
grep -h '^{' "$OUTDIR"/*.log > "$OUTDIR/figures.jsonl" || true
echo "figures: $OUTDIR/figures.jsonl"
