#!/bin/sh
# Run nginx, and reload it when the set of service replicas changes.
#
# Debian's nginx (1.22) resolves an upstream's name once, at start: Docker's DNS answers
# `charrnn` with one address per replica, so least_conn balances over every replica that was up
# then. After `docker compose up --scale charrnn=N` changes N, or a replica comes back with a
# new address, this loop sees the new set (every 5 s) and does a graceful `nginx -s reload`
# (old workers finish their requests; nothing is dropped). The alternative that 1.22 has,
# `resolver 127.0.0.11` with a variable in proxy_pass, re-resolves per request but gives up
# least_conn and the upstream's keep-alive pool, so we keep the upstream block.
set -eu
host=${UPSTREAM_HOST:-charrnn}
addrs() { getent ahostsv4 "$host" 2>/dev/null | awk '{print $1}' | sort -u | tr '\n' ' '; }

nginx -g 'daemon off;' &
pid=$!
trap 'kill -QUIT "$pid" 2>/dev/null; wait "$pid"; exit 0' QUIT TERM INT
last=$(addrs)
echo "nginx-entrypoint: $host -> ${last:-(none)}" >&2
while kill -0 "$pid" 2>/dev/null; do
  sleep 5 &
  wait $! || true
  now=$(addrs)
  if [ -n "$now" ] && [ "$now" != "$last" ]; then
    echo "nginx-entrypoint: $host -> $now (was ${last:-none}); reloading" >&2
    nginx -s reload && last=$now
  fi
done
wait "$pid"
