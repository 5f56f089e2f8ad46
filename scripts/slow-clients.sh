#!/usr/bin/env bash
# Slow clients against the production set-up (`docker compose up`: nginx in front of the
# service): 1,000 connections that send half a request and then dribble a byte a second, then
# 1,000 that stall, must leave /health's p99 at or under 50 ms and /generate working
# (bench/slow_clients.py --check-p99-ms). Run by .ci/run after the container smoke test (whose
# images it reuses); always tears down.
#   scripts/slow-clients.sh            (CHARRNN_PORT=18001 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
export CHARRNN_PORT=${CHARRNN_PORT:-18001}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-charrnn-slow}
BASE="http://127.0.0.1:${CHARRNN_PORT}"
PY=${PYTHON:-python3}
compose() { docker compose -f docker-compose.yml "$@"; }

cleanup() {
  rc=$?
  [[ $rc -ne 0 ]] && compose logs --no-color --tail=50 >&2 || true
  compose down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  exit $rc
}
trap cleanup EXIT

compose up -d
t0=$SECONDS
until curl -sf -m 5 "$BASE/ready" >/dev/null; do
  (( SECONDS - t0 < 180 )) || { echo "FAIL: not ready through nginx after 180 s" >&2; exit 1; }
  sleep 1
done
echo "--- 1,000 connections dribbling a byte a second, through nginx"
$PY bench/slow_clients.py --url "$BASE" --conns 1000 --dribble-s 1 --check-p99-ms 50
echo "--- 1,000 connections stalled, through nginx"
$PY bench/slow_clients.py --url "$BASE" --conns 1000 --dribble-s 0 --check-p99-ms 50
echo "slow clients: all checks passed"
