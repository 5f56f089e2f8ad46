#!/usr/bin/env bash
# Build the image, start it with docker compose, wait until healthy, run the curl smoke test
# against it, print the container's logs on failure, and always tear down.
#   scripts/container-smoke.sh            (CHARRNN_PORT=18000 by default, to stay out of the way)
set -euo pipefail
cd "$(dirname "$0")/.."
export CHARRNN_PORT=${CHARRNN_PORT:-18000}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-charrnn-smoke}
compose() { docker compose "$@"; }

cleanup() {
  rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "--- container logs (failure) ---" >&2
    compose logs --no-color --tail=200 >&2 || true
  fi
  compose down --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  exit $rc
}
trap cleanup EXIT

t0=$(date +%s)
compose build
echo "image: $(docker image inspect charrnn:latest --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
compose up -d

cid=$(compose ps -q charrnn)
echo "waiting for the container to be healthy..."
for _ in $(seq 1 90); do
  health=$(docker inspect --format '{{.State.Health.Status}}' "$cid")
  [[ $health == healthy ]] && break
  [[ $(docker inspect --format '{{.State.Status}}' "$cid") == running ]] || { echo "container exited" >&2; exit 1; }
  sleep 1
done
[[ $health == healthy ]] || { echo "container not healthy: $health" >&2; exit 1; }
echo "healthy after $(( $(date +%s) - t0 )) s (build included)"
[[ $(docker inspect --format '{{.Config.User}}' "$cid") != "" && $(docker inspect --format '{{.Config.User}}' "$cid") != root ]] \
  || { echo "container runs as root" >&2; exit 1; }

bash scripts/smoke.sh "http://127.0.0.1:${CHARRNN_PORT}"
echo "container smoke: passed"
