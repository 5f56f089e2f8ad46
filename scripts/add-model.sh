#!/usr/bin/env bash
# Add (or replace) a model in the compose set-up's shared models volume, atomically: every replica
# serves it from its next request for it (docker-compose.yml, "Models").
#   scripts/add-model.sh PATH/NAME.safetensors [PATH/NAME.json]   (the card defaults to the weights' sibling)
#   scripts/add-model.sh -c CONTAINER NAME.safetensors ...        (through that container: docker exec)
# Each file is streamed through one replica into /models under a temporary name (.NAME.*.tmp, which
# the server ignores) and then renamed over NAME.safetensors / NAME.json: a replica never reads a
# half-written file (`docker compose cp` writes in place). Weights first, then the card, as
# model.checkpoint.save_weights does. Uses `docker compose exec -T charrnn` (index 1; the volume is
# shared), so run it where `docker compose` finds the project (COMPOSE_FILE, COMPOSE_PROJECT_NAME).
set -euo pipefail
container=""
if [[ ${1:-} == -c ]]; then container=$2; shift 2; fi
[[ $# -ge 1 && $# -le 2 && ${1:-} == *.safetensors ]] || { sed -n '2,5p' "$0" >&2; exit 2; }
weights=$1
card=${2:-${weights%.safetensors}.json}
name=$(basename "$weights" .safetensors)
# the server's model ids (service/core/registry.py NAME_RE): anything else is never served
[[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] || { echo "add-model: '$name' is not a valid model id" >&2; exit 2; }
[[ $(basename "$card") == "$name.json" ]] || { echo "add-model: the card must be $name.json, not $card" >&2; exit 2; }
for f in "$weights" "$card"; do [[ -f $f && -r $f ]] || { echo "add-model: no file $f" >&2; exit 2; }; done
dir=${CHARRNN_MODELS_DIR:-/models}

into() {  # into LOCAL_FILE TARGET_NAME: stream it through one replica, then rename it into place
  # shellcheck disable=SC2016  # expanded by the container's shell
  local script='set -e; tmp="$1/.$2.$$.tmp"; trap '\''rm -f "$tmp"'\'' EXIT; cat > "$tmp"; mv -f "$tmp" "$1/$2"; trap - EXIT'
  if [[ -n $container ]]; then
    docker exec -i "$container" sh -c "$script" sh "$dir" "$2" < "$1"
  else
    docker compose exec -T charrnn sh -c "$script" sh "$dir" "$2" < "$1"
  fi
}
into "$weights" "$name.safetensors"
into "$card" "$name.json"
echo "add-model: $name ($(wc -c < "$weights") bytes of weights) is in $dir"
