#!/usr/bin/env bash
# Per-request cost by counting (issue #18): instructions and allocator calls
# per request in `weft serve` and in the client, under valgrind's callgrind,
# which counts the same whatever else the machine is doing.
#
#   bench/cost.sh                          # ping and 1 KiB produce, 20 000 each, fsync interval:5
#   REQUESTS=5000 WORKLOADS=ping bench/cost.sh
#   WEFT_BIN=/path/to/weft RRLOAD=/path/to/rrload OUT=/tmp/cost-before bench/cost.sh
#   WINDOW=64 bench/cost.sh                # 64 requests in flight on the connection
#
# For each workload: start `weft serve` under callgrind on 127.0.0.1, warm
# up (200 requests; produce creates its topic), zero the server's counters
# (callgrind_control -z), run REQUESTS requests from `rrload` (itself under
# callgrind, one connection, WINDOW in flight, 1 by default), dump the
# server's counters (callgrind_control -d), stop the server by pid. Then
# bench/cgsum.py divides by the request count. Results: docs/BENCHMARKS.md,
# "Per-request cost".
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target-bench}
WEFT_BIN=${WEFT_BIN:-$TARGET/release/weft}
RRLOAD=${RRLOAD:-$TARGET/release/examples/rrload}
REQUESTS=${REQUESTS:-20000}
WINDOW=${WINDOW:-1}
SIZE=${SIZE:-1024}
FSYNC=${FSYNC:-interval:5}
WORKLOADS=${WORKLOADS:-ping,produce}
OUT=${OUT:-$(mktemp -d /tmp/weft-cost.XXXXXX)}
BUILD=${BUILD:-1}
mkdir -p "$OUT"

log() { echo "cost.sh: $*" >&2; }

command -v valgrind >/dev/null || { log "installing valgrind"; apt-get install -y -qq valgrind >/dev/null; }
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -p weft && cargo build --release -p weft-service --example rrload) >&2
fi

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

WHERE=(
    "weft_net::server::serve_stream"
    "weft_net::server::ConnIo"
    "weft_service::service::Service::dispatch"
    "weft_service::service::Service::run"
    "weft_service::stats::EndpointStats::record"
    "weft_service::trace::start"
    "tracing_subscriber::"
    "weft_queue::manage::MeteredHandler"
    "weft_wire::codec::FrameDecoder::decode"
    "weft_wire::codec::encode"
    "weft_broker::native::produce"
    "weft_log::log::Log::produce"
    "weft_log::partition::Partition::write_encoded"
    "weft_log::partition::Partition::write"
    "weft_log::segment::Segment::append"
    "rmp_serde::"
    "prometheus_client::"
    "tokio::runtime::task::"
    "tokio::sync::mpsc::"
    "tokio::net::tcp::stream::TcpStream::poll_write"
    "mio::"
    "weft_net::client::"
)

IFS=, read -ra wls <<<"$WORKLOADS"
for w in "${wls[@]}"; do
    dir=$(mktemp -d /tmp/weft-cost-data.XXXXXX)
    port=$(free_port)
    log "$w: weft serve under callgrind on 127.0.0.1:$port ($FSYNC)"
    valgrind --tool=callgrind --callgrind-out-file="$OUT/server-$w.cg" \
        "$WEFT_BIN" serve --data-dir "$dir" --tcp-addr "127.0.0.1:$port" --disable udp \
        --http-addr 127.0.0.1:0 --fsync "$FSYNC" >"$OUT/server-$w.log" 2>&1 &
    spid=$!
    PIDS+=("$spid")
    args=(--addr "tcp://127.0.0.1:$port" --window "$WINDOW")
    [ "$w" = produce ] && args+=(--route log.produce --topic cost --size "$SIZE") || args+=(--route weft.ping)
    for _ in $(seq 1 120); do
        timeout 20 "$RRLOAD" --addr "tcp://127.0.0.1:$port" --requests 1 >/dev/null 2>&1 && break
        sleep 0.5
    done
    extra=()
    [ "$w" = produce ] && extra=(--create-topic)
    timeout 300 "$RRLOAD" "${args[@]}" "${extra[@]}" --requests 200 >/dev/null
    callgrind_control -z "$spid" >/dev/null
    log "$w: $REQUESTS requests, $WINDOW in flight"
    timeout 3000 valgrind --tool=callgrind --callgrind-out-file="$OUT/client-$w.cg" \
        "$RRLOAD" "${args[@]}" --requests "$REQUESTS" 2>"$OUT/client-$w.valgrind.log" | tee "$OUT/client-$w.out" >&2
    callgrind_control -d "$spid" >/dev/null
    sleep 1
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    rm -rf "$dir"
    dump=$(ls "$OUT"/server-"$w".cg.* 2>/dev/null | grep -v '\.log$' | sort | head -1)
    [ -n "$dump" ] || dump=$(ls "$OUT"/server-"$w".cg* | head -1)
    echo "== $w: server ($dump), per request"
    python3 "$ROOT/bench/cgsum.py" "$dump" "$REQUESTS" --where "${WHERE[@]}" | tee "$OUT/server-$w.summary"
    echo "== $w: client (rrload), per request"
    python3 "$ROOT/bench/cgsum.py" "$OUT/client-$w.cg" "$REQUESTS" --where "weft_net::client::" "rmp_serde::" | tee "$OUT/client-$w.summary"
done
log "callgrind files and summaries in $OUT"
