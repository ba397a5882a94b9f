#!/usr/bin/env bash
# recsift's biased MF and Surprise's SVD on MovieLens 100K u1, side by side in one run:
# each side fits on u1.base and is evaluated on u1.test, three times, alternating.
# Usage: benches/u1_side_by_side.sh [ML100K_DIR=../shared/data/ml-100k] [VENV=/work/venv-surprise]
# The venv needs `pip install numpy scikit-surprise`.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-../shared/data/ml-100k}
venv=${2:-/work/venv-surprise}
cargo build --release -q
bin=target/release/recsift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$bin import movielens "$src" "$tmp/ml-100k" >/dev/null
for run in 1 2 3; do
  $bin run pipelines/ml100k-u1-mf.yaml --quiet --force --out "$tmp/out" \
    --set protocol.pool.split.files.train="$tmp/ml-100k/u1.train.parquet" \
    --set protocol.pool.split.files.test="$tmp/ml-100k/u1.test.parquet" >/dev/null
  python3 - "$tmp/out/summary.json" "$run" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"recsift mf (run {sys.argv[2]}): RMSE {s['metrics']['rmse']:.4f}, fit {s['history'][0]['timings_ms']['train'] / 1000:.2f} s")
PY
  "$venv/bin/python" benches/surprise_u1.py --data "$src" --repeats 1
done
