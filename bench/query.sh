#!/usr/bin/env bash
# Weft's query API (weft.query.v1 over gRPC) next to etcd 3.4 (Debian's
# etcd-server, its v3 KV API over gRPC), driven by one load generator
# (query-bench, crates/weft-query-client) in one run: put, get, range of 100
# keys, CAS (Weft SET IF VERSION, etcd Txn on mod_revision), 256-byte
# values, 1, 16 and 64 clients, on one node and on 3 nodes (same shape for
# both systems).
#
#   bench/query.sh                          # defaults below: 1 node, then 3 nodes
#   NODES=3 bench/query.sh                  # only the 3-node shape
#   CLIENTS=1,16 OPS=get,put COUNT=5000 SECONDS_PER=5 bench/query.sh
#   BUILD=0 bench/query.sh                  # use the release binaries already built
#   COMPRESSION=zstd bench/query.sh         # Weft requests compressed
#   NICE=-10 bench/query.sh                 # servers and generator at this niceness (root)
#
# 3 nodes: three `weft serve` cluster members (--node-id, --cluster-addr,
# --cluster-peers; docs/cluster.md) with the table created with REPLICAS 3,
# and a 3-member etcd cluster (--initial-cluster), all on 127.0.0.1 with
# their own data directories. The generator spreads the clients over the
# three members of each system the same way (client i on member i mod 3);
# a member that is not the leader forwards writes (both) and confirms
# reads with the leader (Weft's ReadIndex, etcd's linearizable read), so
# every read is linearizable on both.
#
# Both servers fsync every write before answering (etcd's default; Weft's
# tables always, its raft WAL in cluster mode). Everything listens on
# 127.0.0.1, every cell is bounded by COUNT requests and SECONDS_PER seconds
# (and the whole generator by a timeout), and the script stops only the
# processes it started (by pid). Results: docs/BENCHMARKS.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODES=${NODES:-1,3}
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

# Stop this shape's servers (by pid) and forget them.
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

# Bounded wait for `weft cluster status` on $1 (native port) to show a
# metadata leader and $2 nodes with their native addresses.
wait_weft_cluster() {
    for _ in $(seq 1 120); do
        if "$WEFT" cluster status --json --addr "tcp://127.0.0.1:$1" --timeout-ms 2000 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
ok = isinstance(s.get("meta_leader"), int) and sum(1 for n in s.get("nodes", []) if n.get("native_addr")) == int(sys.argv[1])
sys.exit(0 if ok else 1)' "$2" 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    log "weft cluster: no metadata leader with $2 nodes after 60 s"; return 1
}

ncells=$(( $(echo "$OPS" | tr ',' '\n' | wc -l) * $(echo "$CLIENTS" | tr ',' '\n' | wc -l) ))
GEN_TIMEOUT=$(awk -v c="$ncells" -v s="$SECONDS_PER" 'BEGIN { printf "%d", c * 2 * (s + 30) + 300 }')

for n in ${NODES//,/ }; do
    S=$WORK/n$n; mkdir -p "$S"
    ETCD_ADDRS=(); WEFT_ADDRS=()
    if [ "$n" = 1 ]; then
        EC=$(free_port); EP=$(free_port)
        "${RUN[@]}" etcd --name bench --data-dir "$S/etcd" \
            --listen-client-urls "http://127.0.0.1:$EC" --advertise-client-urls "http://127.0.0.1:$EC" \
            --listen-peer-urls "http://127.0.0.1:$EP" --initial-advertise-peer-urls "http://127.0.0.1:$EP" \
            --initial-cluster "bench=http://127.0.0.1:$EP" --log-level error >"$S/etcd.log" 2>&1 &
        PIDS+=($!); ETCD_ADDRS+=("127.0.0.1:$EC")

        WT=$(free_port); WH=$(free_port); WG=$(free_port)
        "${RUN[@]}" "$WEFT" serve --data-dir "$S/weft" --tcp-addr "127.0.0.1:$WT" --disable udp \
            --http-addr "127.0.0.1:$WH" --grpc-addr "127.0.0.1:$WG" >"$S/weft.log" 2>&1 &
        PIDS+=($!); WEFT_ADDRS+=("127.0.0.1:$WG")
        wait_port "$EC"; wait_port "$WG"
        REPL=()
    elif [ "$n" = 3 ]; then
        EC=(); EP=(); WT=(); WH=(); WG=(); WC=()
        for i in 1 2 3; do
            EC[$i]=$(free_port); EP[$i]=$(free_port)
            WT[$i]=$(free_port); WH[$i]=$(free_port); WG[$i]=$(free_port); WC[$i]=$(free_port)
        done
        EINIT="e1=http://127.0.0.1:${EP[1]},e2=http://127.0.0.1:${EP[2]},e3=http://127.0.0.1:${EP[3]}"
        WPEERS="1=127.0.0.1:${WC[1]},2=127.0.0.1:${WC[2]},3=127.0.0.1:${WC[3]}"
        for i in 1 2 3; do
            "${RUN[@]}" etcd --name "e$i" --data-dir "$S/etcd$i" \
                --listen-client-urls "http://127.0.0.1:${EC[$i]}" --advertise-client-urls "http://127.0.0.1:${EC[$i]}" \
                --listen-peer-urls "http://127.0.0.1:${EP[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${EP[$i]}" \
                --initial-cluster "$EINIT" --initial-cluster-state new --initial-cluster-token "qbench-$$" \
                --log-level error >"$S/etcd$i.log" 2>&1 &
            PIDS+=($!); ETCD_ADDRS+=("127.0.0.1:${EC[$i]}")
            "${RUN[@]}" "$WEFT" serve --data-dir "$S/weft$i" --tcp-addr "127.0.0.1:${WT[$i]}" --disable udp \
                --http-addr "127.0.0.1:${WH[$i]}" --grpc-addr "127.0.0.1:${WG[$i]}" \
                --node-id "$i" --cluster-addr "127.0.0.1:${WC[$i]}" --cluster-peers "$WPEERS" >"$S/weft$i.log" 2>&1 &
            PIDS+=($!); WEFT_ADDRS+=("127.0.0.1:${WG[$i]}")
        done
        for i in 1 2 3; do wait_port "${EC[$i]}"; wait_port "${WG[$i]}"; done
        wait_weft_cluster "${WT[1]}" 3
        # etcd: every member healthy (a leader elected), bounded.
        ETCD_EPS=$(IFS=,; echo "${ETCD_ADDRS[*]}")
        for t in $(seq 1 60); do
            ETCDCTL_API=3 etcdctl --endpoints "$ETCD_EPS" --command-timeout=2s endpoint health >/dev/null 2>&1 && break
            [ "$t" = 60 ] && { log "etcd cluster not healthy after 60 s"; exit 1; }
            sleep 1
        done
        REPL=(--replicas 3)
    else
        log "NODES: 1 and/or 3, not $n"; exit 1
    fi

    WEFT_LIST=$(IFS=,; echo "${WEFT_ADDRS[*]}"); ETCD_LIST=$(IFS=,; echo "${ETCD_ADDRS[*]}")
    log "$n node(s): etcd $(etcd --version | head -1 | awk '{print $3}') on $ETCD_LIST, weft on $WEFT_LIST (gRPC)"
    echo "## $n node(s)"
    echo "# $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# command: NODES=$NODES CLIENTS=$CLIENTS OPS=$OPS COUNT=$COUNT SECONDS_PER=$SECONDS_PER COMPRESSION=$COMPRESSION bench/query.sh"
    "${RUN[@]}" timeout "$GEN_TIMEOUT" "$QB" --weft "$WEFT_LIST" --etcd "$ETCD_LIST" "${REPL[@]}" --ops "$OPS" --clients "$CLIENTS" \
        --count "$COUNT" --seconds "$SECONDS_PER" --value-bytes 256 --compression "$COMPRESSION"
    echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS/n$n" && cp "$S"/*.log "$KEEP_LOGS/n$n/" 2>/dev/null || true; fi
    stop_all
    rm -rf "$S"
done
