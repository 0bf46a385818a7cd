#!/usr/bin/env bash
# Drawbridge as a cluster on this machine, on loopback: redis-server, two engines, three
# workers (mock-acp-agent accounts, assigned by the leading engine) and a gateway, all from
# config/cluster.yaml.
#
#   scripts/cluster.sh        build, start everything, print the endpoints; Ctrl-C stops it all
#   scripts/cluster.sh down   stop a cluster started from another terminal
#
# Environment: CLUSTER_DIR (logs, pids, account homes; default .run/cluster), REDIS_PORT
# (default 6390), NO_BUILD=1 to skip `cargo build`.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=${CLUSTER_DIR:-.run/cluster}
BIN=target/debug
CONFIG=config/cluster.yaml
REDIS_PORT=${REDIS_PORT:-6390}
PIDS="$RUN_DIR/pids"
API_KEY=db-demo-key-change-me
CHANNEL_KEY=cluster-channel-key-change-me

down() {
  [ -f "$PIDS" ] || { echo "no cluster running (no $PIDS)"; return 0; }
  # Front to back: the gateway first, Redis last. Only the processes this script started.
  tac "$PIDS" | while read -r pid name; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  rm -f "$PIDS"
}

# start NAME BINARY [VAR=VALUE ...]: run BINARY with the cluster config and the overrides.
start() {
  local name=$1 binary=$2
  shift 2
  env "$@" DRAWBRIDGE_REDIS__URL="redis://127.0.0.1:$REDIS_PORT" \
    "$BIN/$binary" --config "$CONFIG" >"$RUN_DIR/$name.log" 2>&1 &
  echo "$! $name" >>"$PIDS"
}

wait_for() {
  local what=$1 check=$2
  for _ in $(seq 1 300); do
    if eval "$check" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "$what did not come up; see $RUN_DIR/*.log" >&2
  down
  exit 1
}

up() {
  command -v redis-server >/dev/null || { echo "redis-server is not on PATH (make deps installs it)" >&2; exit 1; }
  command -v curl >/dev/null || { echo "curl is not on PATH" >&2; exit 1; }
  if [ -f "$PIDS" ]; then
    echo "a cluster is already running: scripts/cluster.sh down" >&2
    exit 1
  fi
  [ "${NO_BUILD:-0}" = 1 ] || cargo build --workspace --bins
  mkdir -p "$RUN_DIR"
  trap 'echo; down; exit 0' INT TERM

  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$RUN_DIR" >"$RUN_DIR/redis.log" 2>&1 &
  echo "$! redis" >>"$PIDS"
  wait_for redis "(exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT)"

  for i in 1 2 3; do
    start "worker-$i" kiro-worker \
      DRAWBRIDGE_NODE__ID="worker-$i" \
      DRAWBRIDGE_WORKER__GRPC_LISTEN="127.0.0.1:$((50060 + i))" \
      DRAWBRIDGE_WORKER__HTTP_LISTEN="127.0.0.1:$((8190 + i))" \
      DRAWBRIDGE_WORKER__DATA_DIR="$RUN_DIR/worker-$i"
  done
  for i in 1 2; do
    start "engine-$i" drawbridge-engine \
      DRAWBRIDGE_NODE__ID="engine-$i" \
      DRAWBRIDGE_ENGINE__LISTEN="127.0.0.1:$((8180 + i))"
  done
  start gateway drawbridge-gateway DRAWBRIDGE_NODE__ID=gateway-1
  # Ready when the gateway (through engine-1) sees the three accounts, all six slots warm.
  wait_for "the cluster" \
    "curl -sf http://127.0.0.1:8180/health | grep '\"accounts\":3' | grep -q '\"available_slots\":6'"

  cat <<INFO

  Drawbridge cluster up (logs and pids in $RUN_DIR):
    redis      redis://127.0.0.1:$REDIS_PORT
    gateway    http://127.0.0.1:8180   (API key: $API_KEY; it prefers engine-1, then engine-2)
    engine-1   http://127.0.0.1:8181   (channel key: $CHANNEL_KEY)
    engine-2   http://127.0.0.1:8182
    workers    gRPC 127.0.0.1:50061-50063, HTTP http://127.0.0.1:8191-8193 (/slots, /health)

  curl -N http://127.0.0.1:8180/v1/chat/completions \\
    -H "Authorization: Bearer $API_KEY" -H "Content-Type: application/json" \\
    -d '{"model":"kiro","stream":true,"messages":[{"role":"user","content":"Hello, cluster!"}]}'

  Try: kill -9 a worker (pids in $PIDS) and watch engine-*.log move its account
  ("account assigned"); kill the leading engine ("leadership acquired" in the other one).
  Ctrl-C (or scripts/cluster.sh down) stops everything.

INFO
  wait
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac
