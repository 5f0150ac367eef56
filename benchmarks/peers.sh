#!/usr/bin/env bash
# Benchmark: bertserve side by side with real serving peers (naive grpcio, MOSEC, LitServe, Triton),
# in one sitting, through the peer kit (default ../shared/peers next to this repository: its
# README.md says what each peer is and how the load is made).
#
# What it does:
#   1. sets up the kit's venvs with `bash $PEERS/setup.sh` only when one is missing
#      (under $PEERS_VENVS, default /tmp/peers-venvs; ~8 min the first time);
#   2. writes the kit's seeded 2-label classifier as a bertserve head file
#      ($PEERS/make_bertserve_head.py, in this project's venv), so every server computes the same function;
#   3. runs $PEERS/run_all.sh with bertserve added as "bertserve-<short commit>[-dirty]": the
#      ceiling, then per round each server (consistency check, C=1, C=$C), then the ceiling again;
#   4. prints the kit's own report, then benchmarks/peer_report.py on the same folder: per server
#      C=1 req/s and p50, C=32 req/s and p99 (medians over rounds), bertserve's ratios to the best
#      peer, to the unpadded ceiling and to naive, and a PASS/MISS line per target.
#
# Usage (from anywhere; ~10-12 min per round with all peers):
#   bash benchmarks/peers.sh                                        # ROUNDS=3, all peers
#   SERVERS=naive N1=50 N32=100 ROUNDS=1 bash benchmarks/peers.sh   # smoke run, ~2 min
# Knobs (environment): PEERS (the kit), PEERS_VENVS, ROUNDS (default 3), SERVERS (peers, default all),
#   C, N32, N1, W, MAX_S, READY_S (passed to run_all.sh), OUT (results folder, default
#   /tmp/peers-results/<time>-bertserve), PORT (50061) and METRICS_PORT (9191) of bertserve,
#   SERVE_ARGS (extra `bertserve serve` arguments).
# The name has no space: run_all.sh splits SERVERS on whitespace, NEW_NAME included.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=$(cd "${PEERS:-$REPO/../shared/peers}" && pwd)
export PEERS_VENVS=${PEERS_VENVS:-/tmp/peers-venvs}
export ROUNDS=${ROUNDS:-3}
export OUT=${OUT:-/tmp/peers-results/$(date +%Y%m%d-%H%M%S)-bertserve}
PORT=${PORT:-50061}
METRICS_PORT=${METRICS_PORT:-9191}
PY="$REPO/.venv/bin/python"
[ -x "$PY" ] || { echo "no project venv at $REPO/.venv (see README.md)"; exit 1; }

missing=
for venv in client ${SERVERS:-naive mosec litserve pytriton}; do
  [ -x "$PEERS_VENVS/$venv/bin/python" ] || missing="$missing $venv"
done
if [ -n "$missing" ]; then
  echo "peer venvs missing under $PEERS_VENVS:$missing -> bash $PEERS/setup.sh"
  bash "$PEERS/setup.sh"
fi

mkdir -p "$OUT"
HEAD_FILE="$OUT/bertserve-peer-head.safetensors"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$PY" "$PEERS/make_bertserve_head.py" "$HEAD_FILE"

sha=$(git -C "$REPO" rev-parse --short HEAD)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]; then
  sha="$sha-dirty"  # the server measured is not exactly that commit
fi
export NEW_NAME="bertserve-$sha"
export NEW_CMD="$REPO/.venv/bin/bertserve serve --port $PORT --metrics-port $METRICS_PORT \
--head-file sentiment=$HEAD_FILE ${SERVE_ARGS:-}"
export NEW_TARGET="reflect://127.0.0.1:$PORT/ClassifySentiment"

echo "bertserve as $NEW_NAME: $NEW_CMD"
bash "$PEERS/run_all.sh" || echo "run_all.sh exited with $?"
echo
"$PY" "$REPO/benchmarks/peer_report.py" "$OUT" --new "$NEW_NAME" | tee "$OUT/peer_report.md"
echo
echo "results: $OUT (kit report: report.txt, this summary: peer_report.md)"
