#!/usr/bin/env bash
# mg against the peer gateways (LiteLLM, Portkey) in one run of a peer harness (a directory with
# run_peers.sh, which installs and runs the peers against one fake upstream): mg pinned to CPU 1 with
# one worker and one Envoy thread, exactly as the harness pins the peers, pointed at the harness's
# fake upstream, added as an extra target.
#
#   HARNESS=/path/to/harness tests/bench/peers.sh              # SKIP_INSTALL=1 reuses the peers' installs
#   HARNESS=/path/to/harness ROUNDS=2 DURATION=8 tests/bench/peers.sh
#
# Results: $WORKDIR/results/latest.md (default /tmp/gwbench/results), as the harness writes them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HARNESS="${HARNESS:?set HARNESS to the peer harness directory (the one holding run_peers.sh)}"
WORKDIR="${WORKDIR:-/tmp/gwbench}"
MG_PORT="${MG_PORT:-8080}"
FAKE_PORT="${FAKE_PORT:-18080}"
[ -x "$HARNESS/run_peers.sh" ] || { echo "no harness at $HARNESS (set HARNESS=)" >&2; exit 2; }

DATA="$(mktemp -d /tmp/mg-peers-XXXXXX)"
MG_PID=""
cleanup() {
  if [ -n "$MG_PID" ] && kill -0 "$MG_PID" 2>/dev/null; then
    kill -TERM "$MG_PID"
    for _ in $(seq 100); do kill -0 "$MG_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$DATA"
}
trap cleanup EXIT INT TERM

# mg starts before the harness's fake upstream exists; it only connects when a request arrives.
MG_DATA_DIR="$DATA" MG_HTTP_PORT="$MG_PORT" MG_WORKERS=1 MG_ENVOY_CONCURRENCY=1 \
  MG_DEFAULT_RPM=100000000 \
  OPENAI_API_KEY=sk-fake-upstream OPENAI_BASE_URL="http://127.0.0.1:$FAKE_PORT/v1" \
  taskset -c 1 "$ROOT/.venv/bin/mg" serve > "$DATA/mg.log" 2>&1 &
MG_PID=$!
for _ in $(seq 300); do
  [ -s "$DATA/dev-api-key" ] && curl -fs -o /dev/null "http://127.0.0.1:$MG_PORT/readyz" && break
  kill -0 "$MG_PID" 2>/dev/null || { cat "$DATA/mg.log" >&2; exit 1; }
  sleep 0.2
done
echo "$MG_PID" > "$DATA/mg.pid"
cat > "$DATA/mg-target.json" <<EOF
[{"name": "mg", "base_url": "http://127.0.0.1:$MG_PORT", "key": "$(cat "$DATA/dev-api-key")",
  "model": "openai/dall-e-3", "headers": {}, "pidfile": "$DATA/mg.pid"}]
EOF
echo "mg $(git -C "$ROOT" rev-parse --short HEAD) (pid $MG_PID) is an extra target"
WORKDIR="$WORKDIR" FAKE_PORT="$FAKE_PORT" EXTRA_TARGETS="$DATA/mg-target.json" "$HARNESS/run_peers.sh"
