#!/usr/bin/env bash
# Client throughput in one run: round trips/s and produce records/s from the
# Python and JavaScript clients, next to the Rust client (weft-bench,
# weft-logbench) against the same `weft serve`, and redis-py / ioredis against
# redis-server (Debian's) doing the same shapes of work. Results: docs/BENCHMARKS.md.
#
#   clients/bench.sh                 # 3 s per workload
#   DURATION=5 BUILD=0 clients/bench.sh
#
# weft serve runs with --fsync never (the log's durability policy is not what
# is measured here; bench/log.sh measures it); redis-server without
# persistence. Everything listens on 127.0.0.1; the script stops only the
# processes it started, by pid.
set -euo pipefail

CLIENTS=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$CLIENTS/.." && pwd)
DURATION=${DURATION:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
PY=${WEFT_PYTHON:-$ROOT/.venv/bin/python}
log() { echo "bench.sh: $*" >&2; }

if ! command -v redis-server >/dev/null; then
    log "installing redis-server (Debian package)"
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
if [ "${BUILD:-1}" != 0 ]; then
    log "building release binaries (weft, weft-bench, weft-logbench)"
    (cd "$ROOT" && cargo build --release -q -p weft -p weft-bench -p weft-logbench)
fi
WEFT=$CARGO_TARGET_DIR/release/weft
[ -x "$PY" ] || python3 -m venv "$(dirname "$(dirname "$PY")")"
"$PY" -m pip install -q --disable-pip-version-check msgpack redis
(cd "$CLIENTS/js" && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; } && npm run -s build)

TMP=$(mktemp -d /tmp/weft-clients-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$TMP" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error ioredis >/dev/null)
export IOREDIS="$TMP/node_modules/ioredis/built/index.js"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); HTTP=$(free_port); RPORT=$(free_port)
"$WEFT" serve --data-dir "$TMP/data" --tcp-addr "127.0.0.1:$PORT" --udp-addr "127.0.0.1:$PORT" \
    --http-addr "127.0.0.1:$HTTP" --fsync never --log warn >"$TMP/weft.log" 2>&1 &
PIDS+=($!)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do
    "$WEFT" ping --addr "tcp://127.0.0.1:$PORT" >/dev/null 2>&1 && redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
"$WEFT" ping --addr "tcp://127.0.0.1:$PORT" >/dev/null

OUT=$TMP/results.jsonl
ADDR=tcp://127.0.0.1:$PORT
# The machine's load goes with the numbers (docs/BENCHMARKS.md records it).
log "start: $(date -u '+%F %T UTC'), load: $(uptime | sed 's/.*load average: //')"
log "rust client (weft-bench, weft-logbench)"
"$CARGO_TARGET_DIR/release/weft-bench" --addr "$ADDR" --clients 1,16 --duration "$DURATION" --format json \
    | "$PY" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    w = "ping, %d in flight" % r["clients"]
    print(json.dumps({"client": "weft-rust", "workload": w, "per_s": round(r["requests_per_s"])}))' >>"$OUT"
"$CARGO_TARGET_DIR/release/weft-logbench" run --system weft --target "$ADDR" --label weft-rust --sizes 100 --producers 1 \
    --windows 1 --batches 100 --batch-window 1 --duration-ms $((DURATION * 1000)) --out "$TMP/logbench.jsonl" >&2
"$PY" -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    b = r["scenario"]["batch"]
    w = "produce 100 B, %d record%s/request" % (b, "" if b == 1 else "s")
    print(json.dumps({"client": "weft-rust", "workload": w, "per_s": round(r["produce_rec_s"])}))' "$TMP/logbench.jsonl" >>"$OUT"
log "python client, redis-py"
PYTHONPATH="$CLIENTS/python/src" "$PY" "$CLIENTS/bench/bench.py" weft "$ADDR" "$DURATION" >>"$OUT"
"$PY" "$CLIENTS/bench/bench.py" redis "127.0.0.1:$RPORT" "$DURATION" >>"$OUT"
log "javascript client, ioredis"
node "$CLIENTS/bench/bench.mjs" weft "$ADDR" "$DURATION" >>"$OUT"
node "$CLIENTS/bench/bench.mjs" redis "127.0.0.1:$RPORT" "$DURATION" >>"$OUT"

log "end: $(date -u '+%F %T UTC'), load: $(uptime | sed 's/.*load average: //')"
"$PY" - "$OUT" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cols = ["weft-rust", "weft-python", "weft-python-asyncio", "redis-py", "weft-js", "ioredis"]
work = ["ping, 1 in flight", "ping, 16 in flight", "produce 100 B, 1 record/request", "produce 100 B, 100 records/request"]
val = {(r["client"], r["workload"]): r["per_s"] for r in rows}
print("| per second | " + " | ".join(cols) + " |")
print("|---|" + "---:|" * len(cols))
for w in work:
    print(f"| {w} | " + " | ".join(f"{val[(c, w)]:,}" if (c, w) in val else "-" for c in cols) + " |")
PYEOF
