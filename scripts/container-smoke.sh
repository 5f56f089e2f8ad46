#!/usr/bin/env bash
# Build the images once, then:
#   1. `docker compose up` (nginx in front of one replica): the curl smoke test through nginx,
#      nginx's own limits and that streams come through unbuffered;
#   2. the scale override with 2 replicas: requests reach both (each replica's /metrics, read
#      inside its container); the replicas share the `models` volume: a model written through one
#      replica is listed and served by every replica (each asked inside its container) and through
#      nginx, scripts/add-model.sh adds another, and overwriting the first hot-reloads it on every
#      replica (its sha256 in /v1/models); the `trainer` service (python -m jobs.runner, sharing
#      the `models` and `data` volumes) is running and healthy, a job created through one replica
#      is seen (and cancelled) through the other, and a fine-tuning job created through nginx
#      (a small text uploaded to /v1/files, ~30 steps on smoke-shared) succeeds: its model is
#      listed and answered by every replica and through nginx; then one replica is stopped and
#      requests through nginx still succeed.
# Prints the containers' logs on failure (and the trainer's logs and the jobs' events once a
# job exists) and always tears down, with `down --volumes`: no volume is left behind.
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
    [[ ${#ftjobs[@]} -gt 0 ]] && job_diag "${ftjobs[@]}" >&2
  fi
  compose down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  [[ -n ${scratch:-} ]] && rm -rf "$scratch"
  left=$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
  if [[ -n $left ]]; then
    echo "FAIL: volumes left after down --volumes: $left" >&2
    rc=1
  fi
  exit $rc
}
ftjobs=()   # the fine-tuning jobs created so far (their events are printed on failure)
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
# served CID ENDPOINT [MODEL] -> the replica's count of ENDPOINT requests answered 200 (for MODEL,
# else for every model), from its /metrics: charrnn_requests_total{endpoint=,status=,model=}
served() {
  docker exec "$1" python -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/metrics', timeout=5).read().decode())" \
    | awk -v ep="$2" -v model="${3:-}" '
        /^charrnn_requests_total\{/ && index($0, "endpoint=\"" ep "\"") && index($0, "status=\"200\"") &&
        (model == "" || index($0, "model=\"" model "\"")) { n += $NF }
        END { print int(n) }'
}
predict_count() { served "$1" /predict-next; }
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

# --- the shared models volume -----------------------------------------------------------------
# write_model CID PREFIX SEED: a small random model written as PREFIX.safetensors + PREFIX.json by
# that one replica (save_weights: each file to a temp name beside it, then renamed) -> the sha256
# of its weights
write_model() {
  docker exec "$1" python -c 'import sys, torch
from model import CharRNN, ModelConfig, Vocab
from model.checkpoint import save_weights
torch.manual_seed(int(sys.argv[2]))
v = Vocab(sorted(set("abc xyz\n")))
save_weights(CharRNN(ModelConfig(len(v), embed=8, hidden=16, layers=1, dropout=0.0)).eval(), v, sys.argv[1])' "$2" "$3"
  docker exec "$1" sha256sum "$2.safetensors" | cut -d' ' -f1
}
# model_state CID NAME -> "LOADED SHA256 RELOAD_PENDING" from the replica's own /v1/models, or "absent"
model_state() {
  docker exec "$1" python -c 'import json, sys, urllib.request
ms = json.load(urllib.request.urlopen("http://127.0.0.1:8000/v1/models", timeout=30))["data"]
m = [m for m in ms if m["id"] == sys.argv[1]]
print(" ".join(str(m[0][k]).lower() for k in ("loaded", "sha256", "reload_pending")) if m else "absent")' "$2"
}
# complete_in CID NAME -> "STATUS MODEL TEXT" of a /v1/completions for NAME asked of that replica itself
complete_in() {
  docker exec "$1" python -c 'import json, sys, urllib.error, urllib.request
body = json.dumps({"model": sys.argv[1], "prompt": "abc", "max_tokens": 12, "seed": 1}).encode()
req = urllib.request.Request("http://127.0.0.1:8000/v1/completions", body, {"Content-Type": "application/json"})
try:
    r = urllib.request.urlopen(req, timeout=60)
    d = json.load(r)
    print(r.status, d["model"], repr(d["choices"][0]["text"]))
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode()[:300])' "$2"
}
complete_nginx() {  # complete_nginx NAME -> its HTTP status through nginx (the body must name the model)
  local out
  out=$(curl -s -m 60 -w '\n%{http_code}' "$BASE/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"model\": \"$1\", \"prompt\": \"abc\", \"max_tokens\": 12}")
  [[ ${out##*$'\n'} != 200 || $out == *"\"model\":\"$1\""* ]] || fail "through nginx, not $1's answer: ${out:0:300}"
  echo "${out##*$'\n'}"
}

owner=$(docker exec "${replicas[0]}" stat -c '%u %a' /models)
[[ $owner == "10001 755" ]] || fail "the fresh models volume is '$owner' (uid mode), not '10001 755'"
[[ $(docker exec "${replicas[1]}" sh -c 'echo "$CHARRNN_MODELS_DIR"') == /models ]] || fail "CHARRNN_MODELS_DIR is not /models"
for cid in "${replicas[@]}"; do
  [[ $(model_state "$cid" smoke-shared) == absent ]] || fail "smoke-shared served before it was written"
done
sha1=$(write_model "${replicas[0]}" /models/smoke-shared 1)
echo "models volume (owner uid 10001, mode 755): smoke-shared written through replica A, sha256 ${sha1:0:12}"
for cid in "${replicas[@]}"; do
  state=$(model_state "$cid" smoke-shared)
  [[ $state == "false $sha1 false" ]] || fail "replica ${cid:0:12} lists smoke-shared as '$state' (want: not loaded, sha256 $sha1)"
  out=$(complete_in "$cid" smoke-shared)
  [[ $out == "200 smoke-shared "* ]] || fail "replica ${cid:0:12}: /v1/completions for smoke-shared: $out"
  state=$(model_state "$cid" smoke-shared)
  [[ $state == "true $sha1 false" ]] || fail "replica ${cid:0:12}: after a request smoke-shared is '$state'"
  echo "replica ${cid:0:12}: lists smoke-shared, answers it: ${out#200 smoke-shared }; now loaded"
done
before=($(served "${replicas[0]}" /v1/completions smoke-shared) $(served "${replicas[1]}" /v1/completions smoke-shared))
ok=0
for i in $(seq 1 6); do [[ $(complete_nginx smoke-shared) == 200 ]] && ok=$((ok + 1)); done
a=$(( $(served "${replicas[0]}" /v1/completions smoke-shared) - before[0] ))
b=$(( $(served "${replicas[1]}" /v1/completions smoke-shared) - before[1] ))
echo "smoke-shared through nginx: $ok of 6 answered 200; replica A served $a, replica B served $b"
(( ok == 6 && a + b == 6 )) || fail "requests for smoke-shared through nginx failed"

# the operator's way in (docker-compose.yml): files from here, streamed through one replica
scratch=$(mktemp -d)
write_model "${replicas[1]}" /tmp/smoke-copied 3 >/dev/null   # outside /models: not served
docker cp "${replicas[1]}:/tmp/smoke-copied.safetensors" "$scratch/"
docker cp "${replicas[1]}:/tmp/smoke-copied.json" "$scratch/"
COMPOSE_FILE=docker-compose.yml:docker-compose.scale.yml bash scripts/add-model.sh "$scratch/smoke-copied.safetensors"
sha3=$(sha256sum "$scratch/smoke-copied.safetensors" | cut -d' ' -f1)
for cid in "${replicas[@]}"; do
  state=$(model_state "$cid" smoke-copied)
  [[ $state == "false $sha3 false" ]] || fail "replica ${cid:0:12} lists smoke-copied as '$state' (want sha256 $sha3)"
done
[[ -z $(docker exec "${replicas[0]}" find /models -name '*.tmp') ]] || fail "temporary files left in /models"
[[ $(complete_nginx smoke-copied) == 200 ]] || fail "smoke-copied through nginx"
echo "scripts/add-model.sh: smoke-copied listed by both replicas (sha256 ${sha3:0:12}), answered through nginx"

# Overwrite smoke-shared (same name, other weights) through the other replica: every replica
# notices the new files and serves them from its next request for it.
sha2=$(write_model "${replicas[1]}" /models/smoke-shared 2)
[[ $sha2 != "$sha1" ]] || fail "the new weights have the old sha256"
for cid in "${replicas[@]}"; do
  state=$(model_state "$cid" smoke-shared)
  [[ $state == "true $sha1 true" ]] || fail "replica ${cid:0:12}: after the overwrite smoke-shared is '$state' (want reload pending)"
  out=$(complete_in "$cid" smoke-shared)
  [[ $out == "200 smoke-shared "* ]] || fail "replica ${cid:0:12}: /v1/completions after the overwrite: $out"
  state=$(model_state "$cid" smoke-shared)
  [[ $state == "true $sha2 false" ]] || fail "replica ${cid:0:12}: smoke-shared not reloaded: '$state' (want sha256 $sha2)"
  echo "replica ${cid:0:12}: smoke-shared reloaded after one request: sha256 ${sha1:0:12} -> ${sha2:0:12}, answers ${out#200 smoke-shared }"
done
[[ $(complete_nginx smoke-shared) == 200 ]] || fail "smoke-shared through nginx after the overwrite"

# --- the trainer and fine-tuning jobs (the `data` volume) ------------------------------------
# api_in CID METHOD PATH [JSON] -> "STATUS BODY" of that request asked of the replica itself
api_in() {
  docker exec "$1" python -c 'import sys, urllib.error, urllib.request
req = urllib.request.Request("http://127.0.0.1:8000" + sys.argv[2], sys.argv[3].encode() or None,
                             {"Content-Type": "application/json"}, method=sys.argv[1])
try:
    r = urllib.request.urlopen(req, timeout=60)
    print(r.status, r.read().decode().strip())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode().strip()[:500])' "$2" "$3" "${4:-}"
}
# api METHOD PATH [CURL ARGS...] -> "STATUS BODY" of that request through nginx
api() {
  local method=$1 path=$2 out
  shift 2
  out=$(curl -s -m 60 -X "$method" -w '\n%{http_code}' "$BASE$path" "$@") || true
  echo "${out##*$'\n'} ${out%$'\n'*}"
}
# jget EXPR <<< JSON -> EXPR (Python, `d` the JSON), evaluated in replica B (no Python needed here)
jget() {
  docker exec -i "${replicas[1]}" python -c 'import json, sys; d = json.loads(sys.stdin.read()); print(eval(sys.argv[1]))' "$1"
}
expect() {  # expect STATUS "STATUS BODY" WHAT: the body, or fail saying what answered otherwise
  [[ ${2%% *} == "$1" ]] || fail "$3: ${2:0:400}"
  echo "${2#* }"
}
# job_diag JOB...: the trainer's logs and each job's record and events, oldest first (on failure)
job_diag() {
  local j
  echo "--- the trainer's logs ---"
  compose logs --no-color --tail=200 trainer 2>&1 || true
  for j in "$@"; do
    echo "--- job $j ---"
    docker exec "${replicas[1]}" python -c 'import json, sys, urllib.request
get = lambda p: json.load(urllib.request.urlopen("http://127.0.0.1:8000" + p, timeout=30))
j = get("/v1/fine_tuning/jobs/" + sys.argv[1])
print({k: j[k] for k in ("status", "model", "fine_tuned_model", "step", "total_steps", "error")})
for e in reversed(get("/v1/fine_tuning/jobs/%s/events?limit=1000" % sys.argv[1])["data"]):
    if not e["message"].startswith("Sample at step"):  # (a sample of text at each evaluation)
        print(e["created_at"], e["level"], e["message"])' "$j" 2>&1 || true
  done
}
# runners CID -> how many `python -m jobs.runner` processes run in that container
runners() {
  docker exec "$1" sh -c 'for f in /proc/[0-9]*/cmdline; do tr "\0" " " < "$f" 2>/dev/null; echo; done' | grep -c 'jobs[.]runner' || true
}

wait_healthy trainer 1   # its health check: the runner's heartbeat (/data/runner.heartbeat) is fresh
trainer=$(compose ps -q trainer)
not_root "$trainer"
restarts=$(docker inspect --format '{{.RestartCount}}' "$trainer")
owner=$(docker exec "$trainer" stat -c '%u %a' /data)
[[ $owner == "10001 755" ]] || fail "the fresh data volume is '$owner' (uid mode), not '10001 755'"
[[ $(runners "$trainer") == 1 ]] || fail "the trainer container does not run jobs.runner"
for cid in "${replicas[@]}"; do
  [[ $(docker exec "$cid" sh -c 'echo "$CHARRNN_DATA_DIR $CHARRNN_TRAINER"') == "/data off" ]] \
    || fail "replica ${cid:0:12}: CHARRNN_DATA_DIR / CHARRNN_TRAINER are not /data / off"
  [[ $(runners "$cid") == 0 ]] || fail "replica ${cid:0:12} runs a trainer of its own (CHARRNN_TRAINER=off)"
done
# /info through nginx: a replica sees the trainer's heartbeat in the shared volume, and its settings
read -r jobs threads <<<"$(docker exec "$trainer" sh -c 'echo "$CHARRNN_MAX_JOBS $CHARRNN_TRAIN_THREADS"')"
info=$(expect 200 "$(api GET /info)" "/info through nginx")
[[ $(jget 'tuple(d["trainer"][k] for k in ("mode", "alive", "max_jobs", "threads"))' <<<"$info") == "('off', True, $jobs, $threads)" ]] \
  || fail "/info's trainer: $(jget 'd["trainer"]' <<<"$info") (the trainer's: $jobs job(s), $threads thread(s))"
echo "trainer ${trainer:0:12}: healthy (heartbeat), not root, data volume uid 10001 mode 755; /info: $(jget 'd["trainer"]' <<<"$info")"

# a training text of only smoke-shared's characters ("abc xyz\n"), above CHARRNN_MIN_FILE_CHARS (2000)
awk 'BEGIN { split("abc xyz cab zyx bca yzx acb xzy", w, " "); srand(7)
             for (i = 1; i <= 800; i++) printf "%s%s", w[int(rand() * 8) + 1], (i % 8 ? " " : "\n") }' > "$scratch/smoke-train.txt"
body=$(expect 200 "$(api POST /v1/files -F "file=@$scratch/smoke-train.txt" -F purpose=fine-tune)" "upload through nginx")
fid=$(jget 'd["id"]' <<<"$body")
[[ $fid == file-* ]] || fail "upload: $body"
echo "uploaded $(wc -c < "$scratch/smoke-train.txt") bytes through nginx: $fid ($(jget 'd["status_details"]' <<<"$body"))"

# one database for all (the `data` volume): a job created through replica B is seen, and cancelled,
# through replica A; B sees it cancelled.
other=$(expect 200 "$(api_in "${replicas[1]}" POST /v1/fine_tuning/jobs \
  "{\"model\": \"smoke-shared\", \"training_file\": \"$fid\", \"suffix\": \"other\", \"hyperparameters\": {\"n_steps\": 100000, \"batch_size\": 8, \"seq_len\": 32}}")" \
  "a job created through replica B")
other=$(jget 'd["id"]' <<<"$other")
ftjobs+=("$other")
[[ $(jget 'd["id"], d["model"]' <<<"$(expect 200 "$(api_in "${replicas[0]}" GET "/v1/fine_tuning/jobs/$other")" \
  "replica A asked for B's job")") == "('$other', 'smoke-shared')" ]] || fail "replica A does not see B's job $other"
[[ $(jget "'$other' in [j['id'] for j in d['data']]" <<<"$(expect 200 "$(api_in "${replicas[0]}" GET /v1/fine_tuning/jobs)" \
  "replica A's job list")") == True ]] || fail "replica A's job list lacks $other"
[[ $(jget 'd["status"]' <<<"$(expect 200 "$(api_in "${replicas[0]}" POST "/v1/fine_tuning/jobs/$other/cancel")" \
  "cancelling B's job through A")") == cancelled ]] || fail "B's job not cancelled through A"
[[ $(jget 'd["status"]' <<<"$(expect 200 "$(api_in "${replicas[1]}" GET "/v1/fine_tuning/jobs/$other")" \
  "replica B asked for its job")") == cancelled ]] || fail "replica B does not see its job cancelled"
echo "shared jobs database: $other created through replica B, listed and cancelled through replica A, cancelled for B"

# the job through nginx: ~30 steps on smoke-shared; the trainer publishes the model into /models
body=$(expect 200 "$(api POST /v1/fine_tuning/jobs -H 'Content-Type: application/json' \
  -d "{\"model\": \"smoke-shared\", \"training_file\": \"$fid\", \"suffix\": \"smoke\", \"hyperparameters\": {\"n_steps\": 30, \"batch_size\": 8, \"seq_len\": 32}}")" \
  "creating a job through nginx")
ftjob=$(jget 'd["id"]' <<<"$body")
ftjobs+=("$ftjob")
[[ $(jget 'd["status"]' <<<"$body") == queued ]] || fail "the new job is not queued: $body"
for cid in "${replicas[@]}"; do
  [[ $(jget 'd["id"]' <<<"$(expect 200 "$(api_in "$cid" GET "/v1/fine_tuning/jobs/$ftjob")" "replica ${cid:0:12} asked for $ftjob")") == "$ftjob" ]] \
    || fail "replica ${cid:0:12} does not see $ftjob"
done
echo "fine-tuning job $ftjob created through nginx (30 steps on smoke-shared), seen by both replicas; waiting..."
t0=$SECONDS last=""
while :; do
  [[ $(docker inspect --format '{{.State.Status}} {{.RestartCount}}' "$trainer") == "running $restarts" ]] \
    || fail "the trainer container died or restarted: $(docker inspect --format '{{.State.Status}}, {{.RestartCount}} restart(s), exit {{.State.ExitCode}}' "$trainer")"
  body=$(expect 200 "$(api GET "/v1/fine_tuning/jobs/$ftjob")" "polling $ftjob through nginx")
  state=$(jget '"%s %s/%s" % (d["status"], d["step"], d["total_steps"])' <<<"$body")
  [[ $state != "$last" ]] && echo "  after $(( SECONDS - t0 )) s: $state" && last=$state
  case ${state%% *} in
    succeeded) break ;;
    failed|cancelled) fail "$ftjob ended ${state%% *}: $(jget 'd["error"]' <<<"$body")" ;;
  esac
  (( SECONDS - t0 < 240 )) || fail "$ftjob not succeeded after 240 s: $state"
  sleep 2
done
ftmodel=$(jget 'd["fine_tuned_model"]' <<<"$body")
[[ $ftmodel == ft-smoke-shared-smoke-* ]] || fail "the fine-tuned model is '$ftmodel'"
events=$(expect 200 "$(api GET "/v1/fine_tuning/jobs/$ftjob/events?limit=1000")" "$ftjob's events")
[[ $(jget 'sum(e["type"] == "metrics" for e in d["data"]) > 0, any(e["message"] == "New fine-tuned model created: '"$ftmodel"'" for e in d["data"])' <<<"$events") == "(True, True)" ]] \
  || fail "$ftjob's events lack metrics or the model's creation"
echo "$ftjob succeeded after $(( SECONDS - t0 )) s: $ftmodel ($(jget 'len(d["data"])' <<<"$events") events)"
# published by the trainer (uid 10001) into the shared models volume, its card naming the job
ftsha=$(docker exec "$trainer" sha256sum "/models/$ftmodel.safetensors" | cut -d' ' -f1)
[[ $(docker exec "$trainer" stat -c '%u' "/models/$ftmodel.safetensors" "/models/$ftmodel.json" | sort -u) == 10001 ]] \
  || fail "$ftmodel's files are not owned by uid 10001"
# ... trained from smoke-shared as it is now (the overwritten weights, sha256 $sha2), into other weights
[[ $ftsha != "$sha2" ]] || fail "$ftmodel's weights are smoke-shared's"
card=$(docker exec "$trainer" python -c 'import json, sys; c = json.load(open("/models/%s.json" % sys.argv[1]))["fine_tune"]; print(c["job"], c["base"], c["base_sha256"])' "$ftmodel")
[[ $card == "$ftjob smoke-shared $sha2" ]] || fail "$ftmodel's card: '$card' (want: $ftjob smoke-shared $sha2)"
for cid in "${replicas[@]}"; do
  state=$(model_state "$cid" "$ftmodel")
  [[ $state == "false $ftsha false" ]] || fail "replica ${cid:0:12} lists $ftmodel as '$state' (want sha256 $ftsha)"
  out=$(complete_in "$cid" "$ftmodel")
  [[ $out == "200 $ftmodel "* ]] || fail "replica ${cid:0:12}: /v1/completions for $ftmodel: $out"
  echo "replica ${cid:0:12}: lists $ftmodel (sha256 ${ftsha:0:12}), answers it: ${out#200 "$ftmodel" }"
done
[[ $(jget "'$ftmodel' in [m['id'] for m in d['data']]" <<<"$(expect 200 "$(api GET /v1/models)" "/v1/models through nginx")") == True ]] \
  || fail "nginx's /v1/models lacks $ftmodel"
[[ $(complete_nginx "$ftmodel") == 200 ]] || fail "$ftmodel through nginx"
echo "$ftmodel: listed and answered through nginx"

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
