#!/usr/bin/env bash
# Global budgets demo (`make run-global`): Redis, envoyproxy/ratelimit, the demo backend and
# two Envoys (envoy/envoy-global.yaml) that share the budgets marked "global".
#
#   Envoy A  listener :10000  admin :9901
#   Envoy B  listener :10002  admin :9902
#   backend  :10001           ratelimit gRPC :8081 (envoyproxy/ratelimit)   Redis :6379
#
# Everything runs in the foreground of this script; Ctrl-C (or any exit) stops all of it.
# Ports can be moved with REDIS_PORT, RLS_PORT; ENVOY_BIN and RATELIMIT_BIN pick the binaries
# (RATELIMIT_BIN: envoyproxy/ratelimit's service_cmd, installed by `make ratelimit`).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
REDIS_PORT=${REDIS_PORT:-6379}
RLS_PORT=${RLS_PORT:-8081}
BACKEND_PORT=10001
CONCURRENCY=${CONCURRENCY:-2}
ENVOY_BIN=${ENVOY_BIN:-$ROOT/.venv/bin/envoy}
RATELIMIT_BIN=${RATELIMIT_BIN:-$ROOT/.tools/go/bin/service_cmd}
WASM=$ROOT/target/wasm32-wasip1/release/tenant_quota.wasm
# instance  listener  admin
INSTANCES=("A 10000 9901" "B 10002 9902")

for f in "$ENVOY_BIN" "$RATELIMIT_BIN" "$WASM"; do
  [[ -x $f || -f $f ]] || { echo "missing $f (run: make build envoy ratelimit)" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "redis-server not installed (run: make redis)" >&2; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$REDIS_PORT" "$RLS_PORT" "$BACKEND_PORT" 10000 10002 9901 9902; do
  if port_busy "$p"; then echo "port $p is already in use; stop what holds it (or set REDIS_PORT / RLS_PORT)" >&2; exit 1; fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tq-run-global.XXXXXX")
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "stopping..."
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
STOP=
trap 'STOP=1; exit 130' INT TERM

wait_port() { # port name
  local i
  for i in $(seq 1 100); do port_busy "$1" && return 0; sleep 0.1; done
  echo "$2 did not start on :$1; last log lines:" >&2; tail -n 5 "$WORK"/*.log >&2; exit 1
}

# Redis: in memory only, its files (none expected) in the temp dir.
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --protected-mode no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT" redis-server

# envoyproxy/ratelimit (settings: deploy/ratelimit/README.md). After Redis: this version exits
# at startup if Redis does not answer. It loads every file of its config dir, so the dir holds
# deploy/ratelimit/config.yaml alone. env -i: it reads bare names such as HOST and PORT. Its
# listeners use SO_REUSEPORT, so the port check above is what keeps two services apart.
mkdir -p "$WORK/rt/ratelimit/config"
cp deploy/ratelimit/config.yaml "$WORK/rt/ratelimit/config/config.yaml"
env -i PATH="$PATH" \
  RUNTIME_ROOT="$WORK/rt" RUNTIME_SUBDIRECTORY=ratelimit RUNTIME_APPDIRECTORY=config \
  RUNTIME_WATCH_ROOT=false RUNTIME_IGNOREDOTFILES=true \
  REDIS_SOCKET_TYPE=tcp REDIS_TYPE=SINGLE REDIS_URL="127.0.0.1:$REDIS_PORT" REDIS_TIMEOUT=1s \
  GRPC_HOST=127.0.0.1 GRPC_PORT="$RLS_PORT" HOST=127.0.0.1 PORT=0 DEBUG_HOST=127.0.0.1 DEBUG_PORT=0 \
  DISABLE_STATS=true USE_STATSD=false LOG_LEVEL=warn EXPIRATION_JITTER_MAX_SECONDS=0 \
  LOCAL_CACHE_SIZE_IN_BYTES=0 STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT=false \
  "$RATELIMIT_BIN" >"$WORK/ratelimit.log" 2>&1 &
PIDS+=($!)
wait_port "$RLS_PORT" envoyproxy/ratelimit

python3 envoy/demo_backend.py --port "$BACKEND_PORT" >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND_PORT" demo_backend

for inst in "${INSTANCES[@]}"; do
  read -r name listen admin <<<"$inst"
  sed -e "s/\${LISTEN_PORT}/$listen/g" -e "s/\${ADMIN_PORT}/$admin/g" -e "s/\${RLS_PORT}/$RLS_PORT/g" \
    envoy/envoy-global.yaml >"$WORK/envoy-$name.yaml"
  # --disable-hot-restart: two Envoys on one host must not share the hot-restart base id.
  "$ENVOY_BIN" -c "$WORK/envoy-$name.yaml" --concurrency "$CONCURRENCY" --disable-hot-restart \
    -l warning --log-path "$WORK/envoy-$name.log" &
  PIDS+=($!)
done
wait_port 10000 "Envoy A"
wait_port 10002 "Envoy B"

cat <<EOF

tenant-quota global budgets: Envoy A :10000, Envoy B :10002 (admin :9901, :9902),
envoyproxy/ratelimit :$RLS_PORT, Redis :$REDIS_PORT, logs in $WORK. Ctrl-C stops everything.

# requests_per_minute: 10 per tenant across both Envoys ("sync": decided locally, synced
# every 200 ms; the sleeps give each Envoy time to learn the other's count)
for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{http_code}\n' -H 'x-tenant-id: acme' localhost:10000/; sleep 0.3; done
for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{http_code}\n' -H 'x-tenant-id: acme' localhost:10002/; sleep 0.3; done

# wire_transfers_per_minute: 3 per tenant across both Envoys on /transfer ("exact": one
# service call per request, no sleeps needed)
for p in 10000 10002 10000 10002; do curl -s -o /dev/null -w '%{http_code}\n' -H 'x-tenant-id: globex' localhost:\$p/transfer; done

# what the service counted (key: tenant-quota_tenant_<id>_budget_<name>_window_<index>_<window start>)
redis-cli -p $REDIS_PORT keys '*'
# each Envoy's view (admin token: demo-token) and metrics
curl -s -H 'authorization: Bearer demo-token' localhost:10002/.quota/status
curl -s localhost:9902/stats/prometheus | grep -E 'quota_global|quota_checks_total'
EOF

# Run until Ctrl-C, or until any process dies (then show why); the EXIT trap cleans up.
set +e
wait -n "${PIDS[@]}"
rc=$?
sleep 0.2 # Ctrl-C reaches every process at once: let our own trap run before blaming a child
if [[ -z $STOP ]] && ((rc < 128)); then
  echo "a process exited (status $rc); last log lines:" >&2
  tail -n 5 "$WORK"/*.log >&2
fi
exit "$rc"
