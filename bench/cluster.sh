#!/usr/bin/env bash
# 3-node clusters, side by side (issue #12): NATS JetStream (Debian's nats-server, routes on
# loopback, streams with 3 replicas, file storage) and, once `weft serve` has cluster mode,
# Weft (topics with 3 replicas). The same load generator (weft-logbench) drives both:
# 1 KiB records, 1 and 4 producers, 1 and 64 requests in flight, and batched (Weft only:
# JetStream publishes one message per request); produce records/s and p50/p99 ack latency,
# consume records/s. Then the failover time: kill -9 of the stream / partition leader to the
# first acknowledged produce, FAILOVERS times each (the killed server is restarted between).
# Ratios are printed when both systems ran. Results: docs/BENCHMARKS.md.
#
#   bench/cluster.sh                                   # ~3 min on 2 cores
#   DURATION_MS=1000 FAILOVERS=1 bench/cluster.sh      # a quick look
#
# Knobs (defaults): SYSTEMS (jetstream,weft), SIZES (1024), PRODUCERS (1,4), WINDOWS (1,64),
# BATCHES (100, BATCH_WINDOW=8), DURATION_MS (3000), MAX_RECORDS (1000000), FAILOVERS (3),
# OUT (results dir; default a new /tmp/weft-cluster-bench.XXXXXX), NO_BUILD=1.
# Builds into the shared ./target (release). Every server's pid is kept and ended on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SYSTEMS=${SYSTEMS:-jetstream,weft}
SIZES=${SIZES:-1024}
PRODUCERS=${PRODUCERS:-1,4}
WINDOWS=${WINDOWS:-1,64}
BATCHES=${BATCHES:-100}
BATCH_WINDOW=${BATCH_WINDOW:-8}
DURATION_MS=${DURATION_MS:-3000}
MAX_RECORDS=${MAX_RECORDS:-1000000}
FAILOVERS=${FAILOVERS:-3}
OUT=${OUT:-$(mktemp -d /tmp/weft-cluster-bench.XXXXXX)}
mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
LB=${LB_BIN:-$TARGET/weft-logbench}
WEFT=${WEFT_BIN:-$TARGET/weft}   # WEFT_BIN: another build (a debug one checks the script, gives no numbers)

log() { echo "cluster.sh: $*" >&2; }
has() { [[ ",$SYSTEMS," == *",$1,"* ]]; }

if has jetstream && ! command -v nats-server >/dev/null; then
    log "installing nats-server"; apt-get install -y -q nats-server >/dev/null
fi
if [ "${NO_BUILD:-0}" != 1 ]; then
    log "building weft-logbench (release)"
    (cd "$ROOT" && cargo build --release -q -p weft-logbench)
fi
weft_cluster=0
if has weft; then
    if [ "${NO_BUILD:-0}" != 1 ]; then (cd "$ROOT" && cargo build --release -q -p weft); fi
    if "$WEFT" serve --help 2>/dev/null | grep -q -- '--cluster-peers'; then weft_cluster=1; fi
fi

declare -A PID=()          # server name -> pid
stop_all() {
    for n in "${!PID[@]}"; do kill -CONT "${PID[$n]}" 2>/dev/null || true; kill "${PID[$n]}" 2>/dev/null || true; done
    for n in "${!PID[@]}"; do
        for _ in $(seq 50); do kill -0 "${PID[$n]}" 2>/dev/null || break; sleep 0.1; done
        kill -9 "${PID[$n]}" 2>/dev/null || true; wait "${PID[$n]}" 2>/dev/null || true
        unset "PID[$n]"
    done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# N free loopback ports, none of them listening now (other people's servers share the machine).
ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
wait_tcp() { # NAME PORT
    for _ in $(seq 150); do
        kill -0 "${PID[$1]}" 2>/dev/null || { log "$1 (pid ${PID[$1]}) exited; see $OUT/$1.log"; return 1; }
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    log "$1: nothing listens on 127.0.0.1:$2"; return 1
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "uptime: $(uptime)"
    echo "filesystem: $(df -hT "$OUT" | awk 'NR==2 {print $2, $1}')"
    command -v nats-server >/dev/null && echo "nats-server: $(nats-server --version)"
    echo "weft: tree at $(git -C "$ROOT" rev-parse --short HEAD); cluster mode: $(has weft || echo 'not checked (SYSTEMS)'; has weft && { [ "$weft_cluster" = 1 ] && echo yes || echo 'no (pending)'; })"
    echo "settings: SIZES=$SIZES PRODUCERS=$PRODUCERS WINDOWS=$WINDOWS BATCHES=$BATCHES DURATION_MS=$DURATION_MS FAILOVERS=$FAILOVERS"
} | tee "$OUT/machine.txt" >&2

FILES=()

# ---- NATS JetStream, 3 servers ----
js_start() { # NAME
    local n=$1
    nats-server -c "$OUT/js/$n.conf" >>"$OUT/$n.log" 2>&1 &
    PID[$n]=$!
}
if has jetstream; then
    read -r c1 c2 c3 p1 p2 p3 <<<"$(ports 6)"
    declare -A CPORT=([n1]=$c1 [n2]=$c2 [n3]=$c3) CLIENT=([n1]=$p1 [n2]=$p2 [n3]=$p3)
    mkdir -p "$OUT/js"
    for n in n1 n2 n3; do
        routes=""
        for m in n1 n2 n3; do [ "$m" = "$n" ] || routes+="${routes:+, }nats-route://127.0.0.1:${CPORT[$m]}"; done
        cat >"$OUT/js/$n.conf" <<CONF
server_name: $n
listen: 127.0.0.1:${CLIENT[$n]}
jetstream { store_dir: $OUT/js/$n, max_file_store: 20G, max_memory_store: 256M }
cluster { name: lbc, listen: 127.0.0.1:${CPORT[$n]}, routes: [ $routes ] }
CONF
        js_start "$n"
    done
    for n in n1 n2 n3; do wait_tcp "$n" "${CLIENT[$n]}"; done
    urls="nats://127.0.0.1:$p1,nats://127.0.0.1:$p2,nats://127.0.0.1:$p3"
    # JetStream needs its meta leader before a stream can be made: retry the first run.
    sleep 3
    log "jetstream R3 at $urls (pids n1=${PID[n1]} n2=${PID[n2]} n3=${PID[n3]})"
    "$LB" run --system jetstream --target "$urls" --replicas 3 --label jetstream-r3 --pid "${PID[n1]}" \
        --sizes "$SIZES" --producers "$PRODUCERS" --windows "$WINDOWS" \
        --duration-ms "$DURATION_MS" --max-records "$MAX_RECORDS" --out "$OUT/jetstream-r3.jsonl" \
        || log "jetstream: some runs failed (see above)"
    FILES+=("$OUT/jetstream-r3.jsonl")
    for i in $(seq 1 "$FAILOVERS"); do
        "$LB" failover --system jetstream --target "$urls" --label jetstream-r3 --replicas 3 \
            --pids "n1=${PID[n1]},n2=${PID[n2]},n3=${PID[n3]}" --out "$OUT/failover.jsonl" \
            || log "jetstream failover $i failed"
        for n in n1 n2 n3; do
            if ! kill -0 "${PID[$n]}" 2>/dev/null; then
                wait "${PID[$n]}" 2>/dev/null || true
                log "restarting $n"; js_start "$n"; wait_tcp "$n" "${CLIENT[$n]}"
            fi
        done
        sleep 3   # let the restarted server catch up before the next kill
    done
    stop_all
fi

# ---- Weft, 3 nodes ----
if has weft; then
    if [ "$weft_cluster" != 1 ]; then
        log "weft: PENDING: 'weft serve' has no --cluster-peers yet; only JetStream was measured"
    else
        read -r a1 a2 a3 c1 c2 c3 <<<"$(ports 6)"
        declare -A WA=([1]=$a1 [2]=$a2 [3]=$a3) WC=([1]=$c1 [2]=$c2 [3]=$c3)
        peers="1=127.0.0.1:$c1,2=127.0.0.1:$c2,3=127.0.0.1:$c3"
        weft_start() { # I
            "$WEFT" serve --data-dir "$OUT/weft/$1" --node-id "$1" --tcp-addr "127.0.0.1:${WA[$1]}" \
                --cluster-addr "127.0.0.1:${WC[$1]}" --cluster-peers "$peers" --disable udp --disable http \
                --unix-path "$OUT/weft/$1.sock" >>"$OUT/weft$1.log" 2>&1 &
            PID[w$1]=$!
        }
        mkdir -p "$OUT/weft"
        for i in 1 2 3; do weft_start "$i"; done
        for i in 1 2 3; do wait_tcp "w$i" "${WA[$i]}"; done
        sleep 3
        log "weft R3 at 127.0.0.1:$a1 (pids ${PID[w1]} ${PID[w2]} ${PID[w3]})"
        # Topics are created with cluster.create_topic, replicas 3; a run whose produce is
        # refused (partitions not served by the cluster yet) fails and gives no numbers.
        "$LB" run --system weft --target "tcp://127.0.0.1:$a1" --replicas 3 --label weft-r3 --pid "${PID[w1]}" \
            --sizes "$SIZES" --producers "$PRODUCERS" --windows "$WINDOWS" \
            --batches "$BATCHES" --batch-window "$BATCH_WINDOW" \
            --duration-ms "$DURATION_MS" --max-records "$MAX_RECORDS" --out "$OUT/weft-r3.jsonl" \
            || log "weft: some runs failed (see above)"
        FILES+=("$OUT/weft-r3.jsonl")
        wt="tcp://127.0.0.1:$a1,tcp://127.0.0.1:$a2,tcp://127.0.0.1:$a3"
        for i in $(seq 1 "$FAILOVERS"); do
            "$LB" failover --system weft --target "$wt" --label weft-r3 --replicas 3 \
                --pids "1=${PID[w1]},2=${PID[w2]},3=${PID[w3]}" --out "$OUT/failover.jsonl" \
                || log "weft failover $i failed"
            for n in 1 2 3; do
                if ! kill -0 "${PID[w$n]}" 2>/dev/null; then
                    wait "${PID[w$n]}" 2>/dev/null || true
                    log "restarting weft node $n"; weft_start "$n"; wait_tcp "w$n" "${WA[$n]}"
                fi
            done
            sleep 3
        done
        stop_all
    fi
fi

existing=()
for f in "${FILES[@]}"; do [ -s "$f" ] && existing+=("$f"); done
[ ${#existing[@]} -gt 0 ] || { log "no results"; exit 1; }
ratio=()
[ ${#existing[@]} -gt 1 ] && ratio=(--ratio weft-r3/jetstream-r3)
"$LB" report "${ratio[@]}" --all "${existing[@]}" | tee "$OUT/report.md"
if [ -s "$OUT/failover.jsonl" ]; then
    printf '\n### Failover (kill -9 of the leader to the first acknowledged produce)\n\n' | tee -a "$OUT/report.md"
    python3 - "$OUT/failover.jsonl" <<'PY' | tee -a "$OUT/report.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| system | killed | failover ms | failed attempts |")
print("|---|---|---|---|")
for r in rows:
    print(f"| {r['label']} | {r['killed']} | {r['failover_ms']:.0f} | {r['failed_attempts']} |")
by = {}
for r in rows: by.setdefault(r['label'], []).append(r['failover_ms'])
for k, v in by.items():
    v.sort(); print(f"\n{k}: median {v[len(v)//2]:.0f} ms over {len(v)}")
PY
fi
log "results in $OUT"
