#!/usr/bin/env bash
# Build the images once, then:
#   1. `docker compose up` (nginx in front of one replica): the curl smoke test through nginx,
#      nginx's own limits and that streams come through unbuffered;
#   2. the scale override with 2 replicas: requests reach both (each replica's /metrics, read
#      inside its container), one replica is stopped and requests through nginx still succeed.
# Prints the containers' logs on failure and always tears down.
#   scripts/container-smoke.sh            (CHARRNN_PORT=18000 by default, to stay out of the way)
set -euo pipefail
cd "$(dirname "$0")/.."
export CHARRNN_PORT=${CHARRNN_PORT:-18000}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-charrnn-smoke}
BASE="http://127.0.0.1:${CHARRNN_PORT}"
files=(-f docker-compose.yml)
compose() { docker compose "${files[@]}" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

cleanup() {
  rc=$?
  files=(-f docker-compose.yml -f docker-compose.scale.yml)
  if [[ $rc -ne 0 ]]; then
    echo "--- container logs (failure) ---" >&2
    compose logs --no-color --tail=100 >&2 || true
  fi
  compose down --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  exit $rc
}
trap cleanup EXIT

wait_healthy() {  # wait_healthy SERVICE COUNT
  local t0=$SECONDS cids health n
  while :; do
    cids=$(compose ps -q "$1")
    n=0
    for cid in $cids; do
      health=$(docker inspect --format '{{.State.Health.Status}}' "$cid")
      [[ $(docker inspect --format '{{.State.Status}}' "$cid") == running ]] || fail "$1 container $cid exited"
      [[ $health == healthy ]] && n=$((n + 1))
    done
    [[ $n -ge $2 ]] && return 0
    (( SECONDS - t0 < 120 )) || fail "$1: $n of $2 healthy after 120 s"
    sleep 1
  done
}
not_root() {
  local user
  user=$(docker inspect --format '{{.Config.User}}' "$1")
  [[ -n $user && $user != root && $user != 0 ]] || fail "container $1 runs as root"
}
# predict_count CID -> the replica's count of answered /predict-next requests, from its /metrics
predict_count() {
  docker exec "$1" python -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/metrics', timeout=5).read().decode())" \
    | awk '/^charrnn_requests_total\{endpoint="\/predict-next",status="200"\}/ {print int($2)}' | grep . || echo 0
}
predict() {  # one /predict-next through nginx -> its HTTP status
  curl -s -o /dev/null -m 30 -w '%{http_code}' "$BASE/predict-next" -H 'Content-Type: application/json' \
    -d '{"text": "ROMEO:", "top_k": 2}'
}

# --- 1. the default set-up: nginx + one replica ---------------------------------------------
t0=$(date +%s)
compose build
echo "images: service $(docker image inspect charrnn:latest --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'), nginx $(docker image inspect charrnn-nginx:latest --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
compose up -d
echo "waiting for the service and nginx to be healthy..."
wait_healthy charrnn 1
wait_healthy nginx 1
echo "healthy after $(( $(date +%s) - t0 )) s (build included)"
not_root "$(compose ps -q charrnn)"
not_root "$(compose ps -q nginx)"

bash scripts/smoke.sh "$BASE"

# nginx's own answers: its health, the body limit in the service's JSON shape, streams unbuffered
[[ $(curl -s -m 5 "$BASE/nginx-health") == '{"status":"ok"}' ]] || fail "nginx health"
big=$(head -c 1100000 /dev/zero | tr '\0' a)
out=$(printf '{"text": "%s"}' "$big" | curl -s -m 30 -w '\n%{http_code}' "$BASE/predict-next" -H 'Content-Type: application/json' --data-binary @-)
[[ ${out##*$'\n'} == 413 && $out == *'"payload_too_large"'* ]] || fail "body above 1 MiB: ${out:0:200}"
echo "nginx: 413 payload_too_large above 1 MiB"
# (a buffered stream would arrive all at the end: its first byte as late as its last)
out=$(curl -s -N -m 120 -w '\n%{time_starttransfer} %{time_total}' "$BASE/generate" \
  -H 'Content-Type: application/json' -d '{"prompt": "ROMEO:", "max_new_chars": 300, "seed": 1, "stream": true}')
read -r first total <<<"${out##*$'\n'}"
[[ $out == *'data: [DONE]'* ]] || fail "the stream through nginx did not end with [DONE]"
echo "stream through nginx: first byte after ${first} s, [DONE] after ${total} s"
awk -v f="$first" -v t="$total" 'BEGIN { exit !(f < t / 3) }' || fail "the stream was buffered by nginx"

# --- 2. two replicas behind the same nginx ----------------------------------------------------
files=(-f docker-compose.yml -f docker-compose.scale.yml)
compose up -d --scale charrnn=2
wait_healthy charrnn 2
wait_healthy nginx 1
replicas=($(compose ps -q charrnn))
[[ ${#replicas[@]} == 2 ]] || fail "expected 2 replicas, got ${#replicas[@]}"
echo "2 replicas: ${replicas[*]:0:2}" | cut -c1-80
before=($(predict_count "${replicas[0]}") $(predict_count "${replicas[1]}"))
# nginx notices the new replica within ~5 s (entrypoint.sh reloads): send until both answered.
ok=0
for i in $(seq 1 60); do
  [[ $(predict) == 200 ]] && ok=$((ok + 1))
  a=$(( $(predict_count "${replicas[0]}") - before[0] )); b=$(( $(predict_count "${replicas[1]}") - before[1] ))
  (( a > 0 && b > 0 && i >= 10 )) && break
  sleep 0.3
done
echo "requests through nginx: $ok of $i answered 200; replica A served $a, replica B served $b"
(( ok == i && a > 0 && b > 0 )) || fail "requests did not reach both replicas (or failed)"

# Stop one replica while requests keep coming: none may fail.
docker stop --time 30 "${replicas[0]}" >/dev/null &
stopper=$!
ok=0
for i in $(seq 1 30); do
  [[ $(predict) == 200 ]] && ok=$((ok + 1))
  sleep 0.1
done
wait $stopper
for i in $(seq 31 40); do [[ $(predict) == 200 ]] && ok=$((ok + 1)); done
echo "one replica stopped: $ok of 40 requests through nginx answered 200"
(( ok == 40 )) || fail "requests failed while a replica stopped"
echo "container smoke: passed"
