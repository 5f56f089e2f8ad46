#!/usr/bin/env bash
# Smoke test of a running Char-RNN server with curl: every endpoint answers as documented.
#   scripts/smoke.sh [BASE_URL]        (default http://localhost:8000)
# Prints each call and its answer; exits non-zero at the first unexpected one.
set -euo pipefail
BASE=${1:-${BASE_URL:-http://localhost:8000}}
fail() { echo "FAIL: $*" >&2; exit 1; }

# call METHOD PATH [JSON]  -> sets $status and $body
call() {
  local method=$1 path=$2 data=${3:-}
  local out
  if [[ -n $data ]]; then
    out=$(curl -sS -m 60 -X "$method" "$BASE$path" -H 'Content-Type: application/json' -d "$data" -w $'\n%{http_code}')
  else
    out=$(curl -sS -m 60 -X "$method" "$BASE$path" -w $'\n%{http_code}')
  fi
  status=${out##*$'\n'}
  body=${out%$'\n'*}
  echo "\$ curl -X $method $BASE$path ${data:+-d '$data'}"
  echo "$status ${body:0:300}"
}
expect() {  # expect STATUS [substring...]
  [[ $status == "$1" ]] || fail "expected HTTP $1, got $status: $body"
  shift
  for s in "$@"; do [[ $body == *"$s"* ]] || fail "expected '$s' in: $body"; done
}

call GET /health;  expect 200 '"status":"ok"'
call GET /ready;   expect 200 '"status":"ready"'
call GET /info;    expect 200 '"vocab_size"' '"parameters"' '"limits"'

call POST /predict-next '{"text": "ROMEO:\nWhat light through yonder windo", "top_k": 3}'
expect 200 '"predictions"' '"char"' '"prob"' '"logprob"'

req='{"prompt": "ROMEO:", "max_new_chars": 80, "temperature": 0.8, "seed": 7}'
call POST /generate "$req"; expect 200 '"completions"' '"finish_reason":"length"' '"seed":7' '"generated_chars":80'
first=$body
call POST /generate "$req"; expect 200
[[ $body == "$first" ]] || fail "the same seed gave a different text"

call POST /generate '{"prompt": "ROMEO:\n", "max_new_chars": 300, "seed": 1, "stop": ["\n"]}'
expect 200 '"finish_reason":"stop"'

echo "\$ curl -N -X POST $BASE/generate -d '{\"prompt\": \"JULIET:\", \"max_new_chars\": 20, \"stream\": true}'"
stream=$(curl -sS -N -m 60 "$BASE/generate" -H 'Content-Type: application/json' \
  -d '{"prompt": "JULIET:", "max_new_chars": 20, "seed": 3, "stream": true}')
echo "${stream:0:400}"
[[ $stream == *'"finish_reason": "length"'* && $stream == *'data: [DONE]'* ]] || fail "bad event stream"

call POST /generate '{"prompt": "hi", "temperature": -1}'; expect 422 '"validation_error"' 'temperature'
call POST /generate '{"prompt": "hi", "max_new_chars": 1000000}'; expect 422 'max_new_chars'
call POST /generate '{"prompt": "hi",'; expect 400 '"bad_request"'
call POST /generate '{"prompt": "☃ snow"}'; expect 422 '"unknown_characters"'
call GET /no-such-page; expect 404 '"not_found"'
call GET /generate; expect 405 '"method_not_allowed"'
call GET /metrics; expect 200 'charrnn_requests_total' 'charrnn_batch_size_bucket'
call GET /openapi.json; expect 200 '"openapi"' '"/generate"' '"/v1/completions"'

# OpenAI-compatible API: the model's id comes from /v1/models; same seed -> same text as /generate
call GET /v1/models; expect 200 '"object":"list"' '"object":"model"' '"vocab"'
model=$(sed -E 's/.*"data":\[\{"id":"([^"]*)".*/\1/' <<<"$body")
[[ -n $model && $model != "$body" ]] || fail "no model id in /v1/models"
call POST /v1/completions "{\"model\": \"$model\", \"prompt\": \"ROMEO:\", \"max_tokens\": 40, \"seed\": 7, \"temperature\": 0.8}"
expect 200 '"object":"text_completion"' '"finish_reason":"length"' '"completion_tokens":40'
v1_text=$(sed -E 's/.*"text":"(([^"\\]|\\.)*)".*/\1/' <<<"$body" | head -c 400)
call POST /generate '{"prompt": "ROMEO:", "max_new_chars": 40, "seed": 7, "temperature": 0.8}'; expect 200
[[ $body == *"\"text\":\"$v1_text\""* ]] || fail "/v1/completions and /generate gave different texts for one seed"
call POST /v1/completions "{\"model\": \"$model\", \"prompt\": \"ROMEO:\", \"max_tokens\": 3, \"logprobs\": 2, \"echo\": true}"
expect 200 '"token_logprobs":[null,' '"top_logprobs"' '"text_offset"'
echo "\$ curl -N -X POST $BASE/v1/completions -d '{\"model\": \"$model\", \"prompt\": \"JULIET:\", \"max_tokens\": 8, \"stream\": true}'"
stream=$(curl -sS -N -m 60 "$BASE/v1/completions" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$model\", \"prompt\": \"JULIET:\", \"max_tokens\": 8, \"seed\": 3, \"stream\": true}")
echo "${stream:0:400}"
[[ $stream == *'"finish_reason": "length"'* && $stream == *'data: [DONE]'* ]] || fail "bad /v1 event stream"
call POST /v1/completions '{"model": "no-such-model", "prompt": "hi"}'; expect 404 '"code":"model_not_found"'
call POST /v1/completions "{\"model\": \"$model\", \"prompt\": \"hi\", \"temperature\": 9}"
expect 400 '"type":"invalid_request_error"' '"param":"temperature"'
echo "smoke: all checks passed against $BASE"
