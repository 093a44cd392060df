#!/usr/bin/env bash
# Starts a local 3-master Redis Cluster from redis-server processes, for tests
# and for trying crowd on a cluster.
#
#   scripts/redis-cluster.sh start [BASE_PORT] [DIR]   # default 7000, a new temp dir
#   scripts/redis-cluster.sh stop DIR
#
# `start` prints `REDIS_URL=redis://127.0.0.1:P1,redis://127.0.0.1:P2,...` and
# the data directory; nodes listen on loopback only.
set -euo pipefail

need() { command -v "$1" >/dev/null 2>&1 || { echo "$1 not found: apt-get install redis-server redis-tools" >&2; exit 1; }; }

case "${1:-}" in
  start)
    need redis-server; need redis-cli
    base="${2:-7000}"
    dir="${3:-$(mktemp -d -t crowd-cluster-XXXXXX)}"
    nodes=()
    for i in 0 1 2; do
      port=$((base + i))
      mkdir -p "$dir/$port"
      redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file "$dir/$port/nodes.conf" --cluster-node-timeout 2000 \
        --dir "$dir/$port" --save "" --appendonly no --daemonize yes \
        --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log"
      nodes+=("127.0.0.1:$port")
    done
    for n in "${nodes[@]}"; do
      for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p "${n##*:}" ping >/dev/null 2>&1 && break; sleep 0.1; done
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log"
    for _ in $(seq 100); do
      redis-cli -p "$base" cluster info | grep -q 'cluster_state:ok' && break; sleep 0.1
    done
    urls=$(printf 'redis://%s,' "${nodes[@]}")
    echo "REDIS_URL=${urls%,}"
    echo "CLUSTER_DIR=$dir"
    ;;
  stop)
    dir="${2:?usage: $0 stop DIR}"
    for pid in "$dir"/*/redis.pid; do [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true; done
    ;;
  *)
    sed -n '2,9p' "$0"; exit 2 ;;
esac
