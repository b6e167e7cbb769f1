#!/usr/bin/env bash
# Streaming log, side by side: `weft serve` (log.produce / log.fetch) with
# fsync always, interval:5 and never; NATS JetStream (nats-server 2.9, file
# storage, which acks before any fsync); Redis Streams (XADD / XREAD, AOF with
# appendfsync always and everysec). One Rust load generator (weft-logbench)
# drives all three with the same payloads; each server is started, measured,
# stopped (by pid) and its data wiped before the next. Results: docs/BENCHMARKS.md.
#
#   bench/log.sh                                  # the full matrix (~10 min on 2 cores)
#   DURATION_MS=1000 SIZES=1024 WINDOWS=64 bench/log.sh     # a quick look
#   SYSTEMS=weft WEFT_FSYNC=never bench/log.sh
#   SYSTEMS=weft,floor,redis WEFT_FSYNC=always REDIS_FSYNC=always SIZES=1024 PRODUCERS=4 \
#       WINDOWS=64 BATCHES= bench/log.sh         # issue #18's shape, with the floor beside it
#
# Knobs (defaults): SYSTEMS (weft,jetstream,redis), WEFT_FSYNC (always,interval:5,never),
# REDIS_FSYNC (always,everysec), SIZES (100,1024), PRODUCERS (1,4), WINDOWS (1,64,256),
# BATCHES (100: Weft also runs with 100 records per request, BATCH_WINDOW=8 in flight),
# DURATION_MS (3000 per run), MAX_RECORDS (2000000 per run), WEFT_TRANSPORT (tcp | unix),
# OUT (results directory; default a new /tmp/weft-logbench.XXXXXX), NO_BUILD=1 (use the
# binaries already in $CARGO_TARGET_DIR/release), FLOOR_FSYNC (always,none) and FLOOR_SPIN_NS
# (0; a list adds runs) for the `floor` system: crates/weft-perf/examples/floor.rs, the least a
# server of Weft's protocol does per produce (no decode, no batch, no statistics), each run with
# that much busy time added per produce (docs/BENCHMARKS.md, issue #18, ninth round).
#
# Needs: apt-get install -y nats-server redis-server. Everything binds 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SYSTEMS=${SYSTEMS:-weft,jetstream,redis}
WEFT_FSYNC=${WEFT_FSYNC:-always,interval:5,never}
REDIS_FSYNC=${REDIS_FSYNC:-always,everysec}
SIZES=${SIZES:-100,1024}
PRODUCERS=${PRODUCERS:-1,4}
WINDOWS=${WINDOWS:-1,64,256}
BATCHES=${BATCHES:-100}
BATCH_WINDOW=${BATCH_WINDOW:-8}
DURATION_MS=${DURATION_MS:-3000}
MAX_RECORDS=${MAX_RECORDS:-2000000}
WEFT_TRANSPORT=${WEFT_TRANSPORT:-tcp}
FLOOR_FSYNC=${FLOOR_FSYNC:-always,none}
FLOOR_SPIN_NS=${FLOOR_SPIN_NS:-0}
# Each port is the first free one from these (other people's servers may
# share the machine; connecting to one of them would measure the wrong thing).
WEFT_PORT=${WEFT_PORT:-27400}
NATS_PORT=${NATS_PORT:-24222}
REDIS_PORT=${REDIS_PORT:-26379}
OUT=${OUT:-$(mktemp -d /tmp/weft-logbench.XXXXXX)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-logbench}
mkdir -p "$OUT"

log() { echo "log.sh: $*" >&2; }
has() { [[ ",$SYSTEMS," == *",$1,"* ]]; }

need() { command -v "$1" >/dev/null || { log "$1 not found: apt-get install -y nats-server redis-server"; exit 1; }; }
if has jetstream; then need nats-server; fi
if has redis; then need redis-server; fi

if [ "${NO_BUILD:-0}" != 1 ]; then
    log "building weft and weft-logbench (release) in $CARGO_TARGET_DIR"
    (cd "$ROOT" && cargo build --release -q -p weft -p weft-logbench)
    if has floor; then (cd "$ROOT" && cargo build --release -q -p weft-perf --example floor); fi
fi
WEFT=$CARGO_TARGET_DIR/release/weft
FLOOR=$CARGO_TARGET_DIR/release/examples/floor
LB=$CARGO_TARGET_DIR/release/weft-logbench

# The server of the moment; stopped on any exit.
SERVER_PID=
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
trap stop_server EXIT INT TERM

free_port() { # FIRST: print the first port from FIRST on that nothing listens on
    local p
    for p in $(seq "$1" $(( $1 + 200 ))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    log "no free port from $1"; return 1
}

wait_tcp() { # PORT: until it listens, and fail if our server died (e.g. the port was taken)
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || { log "server (pid $SERVER_PID) exited; see $OUT/*.server.log"; return 1; }
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && sleep 0.3 && kill -0 "$SERVER_PID" 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listens on 127.0.0.1:$1"; return 1
}


lb_run() { # SYSTEM TARGET LABEL [extra args]
    local system=$1 target=$2 label=$3; shift 3
    log "$label: $system at $target (pid $SERVER_PID)"
    "$LB" run --system "$system" --target "$target" --label "$label" --pid "$SERVER_PID" \
        --sizes "$SIZES" --producers "$PRODUCERS" --windows "$WINDOWS" \
        --duration-ms "$DURATION_MS" --max-records "$MAX_RECORDS" --out "$OUT/$label.jsonl" "$@" \
        || log "$label: some runs failed (see above)"
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "filesystem: $(df -hT "$OUT" | awk 'NR==2 {print $2, $1}')"
    command -v nats-server >/dev/null && echo "nats-server: $(nats-server --version)"
    command -v redis-server >/dev/null && echo "redis-server: $(redis-server --version | cut -d' ' -f3)"
    # The binary may be older than HEAD when NO_BUILD=1: say both.
    echo "weft: tree at $(git -C "$ROOT" rev-parse --short HEAD); binary built $(date -u -r "$WEFT" +%Y-%m-%dT%H:%MZ 2>/dev/null || echo '?')"
    echo "settings: SIZES=$SIZES PRODUCERS=$PRODUCERS WINDOWS=$WINDOWS BATCHES=$BATCHES BATCH_WINDOW=$BATCH_WINDOW DURATION_MS=$DURATION_MS MAX_RECORDS=$MAX_RECORDS WEFT_TRANSPORT=$WEFT_TRANSPORT"
} | tee "$OUT/machine.txt" >&2

FILES=()
if has weft; then
    IFS=, read -ra fsyncs <<<"$WEFT_FSYNC"
    for f in "${fsyncs[@]}"; do
        label=weft-${f//:/}
        dir=$OUT/data-$label
        rm -rf "$dir"; mkdir -p "$dir"
        WEFT_PORT=$(free_port "$WEFT_PORT")
        "$WEFT" serve --data-dir "$dir" --tcp-addr "127.0.0.1:$WEFT_PORT" --disable udp \
            --http-addr 127.0.0.1:0 --fsync "$f" >"$OUT/$label.server.log" 2>&1 &
        SERVER_PID=$!
        wait_tcp "$WEFT_PORT"
        target=tcp://127.0.0.1:$WEFT_PORT
        [ "$WEFT_TRANSPORT" = unix ] && target=unix://$dir/weft.sock
        extra=()
        [ -z "$BATCHES" ] || extra=(--batches "$BATCHES" --batch-window "$BATCH_WINDOW")
        lb_run weft "$target" "$label" "${extra[@]}"
        stop_server; rm -rf "$dir"
        FILES+=("$OUT/$label.jsonl")
    done
fi

if has floor; then
    IFS=, read -ra fsyncs <<<"$FLOOR_FSYNC"
    IFS=, read -ra spins <<<"$FLOOR_SPIN_NS"
    for f in "${fsyncs[@]}"; do
        for spin in "${spins[@]}"; do
            label=floor-$f
            [ "$spin" = 0 ] || label=$label-spin$spin
            dir=$OUT/data-$label
            rm -rf "$dir"; mkdir -p "$dir"
            WEFT_PORT=$(free_port "$WEFT_PORT")
            FLOOR_SPIN_NS=$spin "$FLOOR" "127.0.0.1:$WEFT_PORT" "$dir" "$f" >"$OUT/$label.server.log" 2>&1 &
            SERVER_PID=$!
            wait_tcp "$WEFT_PORT"
            lb_run weft "tcp://127.0.0.1:$WEFT_PORT" "$label"
            stop_server; rm -rf "$dir"
            FILES+=("$OUT/$label.jsonl")
        done
    done
fi

if has jetstream; then
    dir=$OUT/data-jetstream
    rm -rf "$dir"; mkdir -p "$dir/js"
    NATS_PORT=$(free_port "$NATS_PORT")
    # File storage, one replica (set per stream by the load generator).
    cat >"$dir/nats.conf" <<CONF
listen: 127.0.0.1:$NATS_PORT
jetstream {
  store_dir: $dir/js
  max_file_store: 40G
  max_memory_store: 1G
}
CONF
    nats-server -c "$dir/nats.conf" >"$OUT/jetstream.server.log" 2>&1 &
    SERVER_PID=$!
    wait_tcp "$NATS_PORT"
    lb_run jetstream "nats://127.0.0.1:$NATS_PORT" jetstream
    stop_server; rm -rf "$dir"
    FILES+=("$OUT/jetstream.jsonl")
fi

if has redis; then
    IFS=, read -ra fsyncs <<<"$REDIS_FSYNC"
    for f in "${fsyncs[@]}"; do
        label=redis-$f
        dir=$OUT/data-$label
        rm -rf "$dir"; mkdir -p "$dir"
        REDIS_PORT=$(free_port "$REDIS_PORT")
        redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes --daemonize no \
            --dir "$dir" --save "" --appendonly yes --appendfsync "$f" >"$OUT/$label.server.log" 2>&1 &
        SERVER_PID=$!
        wait_tcp "$REDIS_PORT"
        lb_run redis "redis://127.0.0.1:$REDIS_PORT/" "$label"
        stop_server; rm -rf "$dir"
        FILES+=("$OUT/$label.jsonl")
    done
fi

existing=()
for f in "${FILES[@]}"; do [ -s "$f" ] && existing+=("$f"); done
[ ${#existing[@]} -gt 0 ] || { log "no results"; exit 1; }
"$LB" report "${existing[@]}" | tee "$OUT/report.md"
"$LB" report --all "${existing[@]}" >"$OUT/report-all.md"
log "results in $OUT (report.md, report-all.md, *.jsonl, machine.txt)"
