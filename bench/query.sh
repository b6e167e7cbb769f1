#!/usr/bin/env bash
# Weft's query API (weft.query.v1 over gRPC) next to etcd 3.4 (Debian's
# etcd-server, its v3 KV API over gRPC), driven by one load generator
# (query-bench, crates/weft-query-client) in one run: put, get, range of 100
# keys, CAS (Weft SET IF VERSION, etcd Txn on mod_revision), 256-byte
# values, 1, 16 and 64 clients. Single node each: Weft's tables are not
# replicated yet (docs/query.md), so there is no 3-node row.
#
#   bench/query.sh                          # defaults below
#   CLIENTS=1,16 OPS=get,put COUNT=5000 SECONDS_PER=5 bench/query.sh
#   BUILD=0 bench/query.sh                  # use the release binaries already built
#   COMPRESSION=zstd bench/query.sh         # Weft requests compressed
#   NICE=-10 bench/query.sh                 # servers and generator at this niceness (root)
#
# Both servers fsync every write before answering (etcd's default; Weft's
# tables always). Everything listens on 127.0.0.1, every cell is bounded by
# COUNT requests and SECONDS_PER seconds, and the script stops only the
# processes it started (by pid). Results: docs/BENCHMARKS.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLIENTS=${CLIENTS:-1,16,64}
OPS=${OPS:-put,get,range,cas}
COUNT=${COUNT:-20000}
SECONDS_PER=${SECONDS_PER:-10}
COMPRESSION=${COMPRESSION:-none}
NICE=${NICE:-0}
BUILD=${BUILD:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
RUN=(nice -n "$NICE")

log() { echo "query.sh: $*" >&2; }

if ! command -v etcd >/dev/null; then
    log "installing etcd-server and etcd-client (Debian packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi

if [ "$BUILD" = 1 ]; then
    log "building weft and query-bench (release) in $CARGO_TARGET_DIR"
    (cd "$ROOT" && cargo build --release -p weft --bin weft -p weft-query-client --bin query-bench)
fi
WEFT=$CARGO_TARGET_DIR/release/weft
QB=$CARGO_TARGET_DIR/release/query-bench

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listening on port $1"; return 1
}

WORK=$(mktemp -d /tmp/weft-query-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

EC=$(free_port); EP=$(free_port)
"${RUN[@]}" etcd --name bench --data-dir "$WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$EC" --advertise-client-urls "http://127.0.0.1:$EC" \
    --listen-peer-urls "http://127.0.0.1:$EP" --initial-advertise-peer-urls "http://127.0.0.1:$EP" \
    --initial-cluster "bench=http://127.0.0.1:$EP" --log-level error >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)

WT=$(free_port); WH=$(free_port); WG=$(free_port)
"${RUN[@]}" "$WEFT" serve --data-dir "$WORK/weft" --tcp-addr "127.0.0.1:$WT" --disable udp \
    --http-addr "127.0.0.1:$WH" --grpc-addr "127.0.0.1:$WG" >"$WORK/weft.log" 2>&1 &
PIDS+=($!)

wait_port "$EC"; wait_port "$WG"
log "etcd $(etcd --version | head -1 | awk '{print $3}') on 127.0.0.1:$EC, weft on 127.0.0.1:$WG (gRPC)"
echo "# $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# command: CLIENTS=$CLIENTS OPS=$OPS COUNT=$COUNT SECONDS_PER=$SECONDS_PER COMPRESSION=$COMPRESSION bench/query.sh"
"${RUN[@]}" "$QB" --weft "127.0.0.1:$WG" --etcd "127.0.0.1:$EC" --ops "$OPS" --clients "$CLIENTS" \
    --count "$COUNT" --seconds "$SECONDS_PER" --value-bytes 256 --compression "$COMPRESSION"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
