#!/usr/bin/env bash
# Request/response round trips: `weft serve` answering weft.ping over TCP,
# Unix sockets and UDP, next to redis-server answering PING to
# redis-benchmark, at the same concurrencies, in one run.
#
#   bench/rr.sh                        # 1, 16, 64 clients, 3 s per run
#   DURATION=5 CLIENTS=1,8 bench/rr.sh
#   WORKLOAD=echo PAYLOAD=64 bench/rr.sh   # weft.echo of 64 bytes instead of ping
#   WEFT_THREADS=1 bench/rr.sh         # weft serve on one runtime thread, like redis
#   BUILD=0 bench/rr.sh                # use the release binaries already built
#   NICE=-10 bench/rr.sh               # run servers and load generators at this
#                                      # niceness (root), when other jobs share the CPUs
#
# Everything listens on 127.0.0.1 (and Unix sockets in a temp dir), every
# run is bounded in time, and the script stops only the processes it started
# (by pid) when it exits. Results: docs/BENCHMARKS.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-3}
CLIENTS=${CLIENTS:-1,16,64}
WORKLOAD=${WORKLOAD:-ping}
PAYLOAD=${PAYLOAD:-16}
WEFT_THREADS=${WEFT_THREADS:-}
NICE=${NICE:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
# Every server and load generator runs at the same niceness, so both sides
# get the same share of a busy machine.
# (`nice` and `env` exec the program, so $! is the server's own pid.)
RUN=(nice -n "$NICE")
WEFT_ENV=(env)
# tokio sizes its worker pool from TOKIO_WORKER_THREADS (default: one per core).
[ -z "$WEFT_THREADS" ] || WEFT_ENV=(env "TOKIO_WORKER_THREADS=$WEFT_THREADS")

log() { echo "rr.sh: $*" >&2; }

# --- tools --------------------------------------------------------------
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    log "installing redis-server (Debian package)"
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi
if [ "${BUILD:-1}" != 0 ]; then
    log "building release binaries (weft, weft-bench)"
    (cd "$ROOT" && cargo build --release -q -p weft -p weft-bench)
fi
WEFT=$CARGO_TARGET_DIR/release/weft
BENCH=$CARGO_TARGET_DIR/release/weft-bench

# --- processes we start, and stop on exit -------------------------------
TMP=$(mktemp -d /tmp/weft-rr.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port no TCP or UDP socket is bound to on this host (racy, but loopback
# ports are plentiful and a clash fails loudly at bind).
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! ss -Htanu 2>/dev/null | awk '{print $5}' | grep -q ":$p\$"; then
            echo "$p"; return 0
        fi
    done
    log "no free port found"; return 1
}

wait_until() { # seconds, command...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { log "timed out waiting for: $*"; return 1; }
        sleep 0.1
    done
}

# --- weft ---------------------------------------------------------------
TCP_PORT=$(free_port); UDP_PORT=$(free_port)
mkdir -p "$TMP/weft"
"${WEFT_ENV[@]}" "${RUN[@]}" "$WEFT" serve --data-dir "$TMP/weft" --tcp-addr "127.0.0.1:$TCP_PORT" --udp-addr "127.0.0.1:$UDP_PORT" \
    --log warn >"$TMP/weft.log" 2>&1 &
PIDS+=($!)
wait_until 15 "$WEFT" ping --addr "tcp://127.0.0.1:$TCP_PORT" --timeout-ms 500 \
    || { cat "$TMP/weft.log" >&2; exit 1; }
log "weft serve up (pid ${PIDS[0]}): tcp $TCP_PORT, udp $UDP_PORT, unix $TMP/weft/weft.sock"

log "weft-bench: $WORKLOAD, clients $CLIENTS, ${DURATION}s per run"
timeout 600 "${RUN[@]}" "$BENCH" --addr "tcp://127.0.0.1:$TCP_PORT" --addr "unix://$TMP/weft/weft.sock" \
    --addr "udp://127.0.0.1:$UDP_PORT" --clients "$CLIENTS" --duration "$DURATION" \
    --workload "$WORKLOAD" --payload "$PAYLOAD" --format csv >"$TMP/weft.csv"

# --- redis --------------------------------------------------------------
REDIS_PORT=$(free_port)
mkdir -p "$TMP/redis"
"${RUN[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes --save '' --appendonly no \
    --dir "$TMP/redis" --unixsocket "$TMP/redis/redis.sock" --unixsocketperm 700 \
    --daemonize no --logfile "$TMP/redis.log" &
PIDS+=($!)
wait_until 15 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping || { cat "$TMP/redis.log" >&2; exit 1; }
log "redis-server up (pid ${PIDS[1]}): tcp $REDIS_PORT, unix $TMP/redis/redis.sock"

# redis-benchmark runs a request count, not a duration: a short calibration
# run sizes -n so each measured run lasts about DURATION seconds.
redis_run() { # tcp|unix clients -> "test,rps,p50_us,p99_us" lines
    local how=$1 c=$2 target n rps
    if [ "$how" = unix ]; then target=(-s "$TMP/redis/redis.sock"); else target=(-h 127.0.0.1 -p "$REDIS_PORT"); fi
    rps=$(timeout 60 "${RUN[@]}" redis-benchmark "${target[@]}" -t ping -c "$c" -n 20000 -P 1 --csv \
        | awk -F'","' '/PING_MBULK/ {print int($2)}')
    n=$(awk -v r="$rps" -v d="$DURATION" 'BEGIN { n = int(r * d); if (n < 10000) n = 10000; if (n > 5000000) n = 5000000; print n }')
    timeout 300 "${RUN[@]}" redis-benchmark "${target[@]}" -t ping -c "$c" -n "$n" -P 1 --csv \
        | tr -d '"' | awk -F, 'NR > 1 { printf "%s,%s,%.1f,%.1f\n", $1, $2, $5 * 1000, $7 * 1000 }'
}
: >"$TMP/redis.csv"
for how in tcp unix; do
    for c in ${CLIENTS//,/ }; do
        log "redis-benchmark: $how, $c clients"
        redis_run "$how" "$c" | sed "s/^/$how,$c,/" >>"$TMP/redis.csv"
    done
done

# --- table --------------------------------------------------------------
# weft rows: transport,workload,clients,requests,errors,seconds,rps,p50_us,p99_us,max_us,mean_us
# redis rows: how,clients,test,rps,p50_us,p99_us
# Each weft row is set against redis PING_MBULK (the RESP array form every
# client library sends) at the same concurrency: over the Unix socket for
# weft's unix rows, over TCP otherwise (redis has no UDP).
echo
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# weft $WORKLOAD vs redis PING_MBULK, -P 1, ${DURATION}s per run, weft threads ${WEFT_THREADS:-$(nproc)}, nice $NICE; latencies in microseconds"
printf '%-6s %7s | %10s %8s %8s %6s | %-5s %10s %8s %8s | %11s\n' \
    transport clients "weft req/s" p50 p99 errors redis "req/s" p50 p99 "weft/redis"
tail -n +2 "$TMP/weft.csv" | while IFS=, read -r tr _wl c _req err _s rps p50 p99 _max _mean; do
    how=tcp; [ "$tr" = unix ] && how=unix
    IFS=, read -r _h _c _t rrps rp50 rp99 < <(grep "^$how,$c,PING_MBULK," "$TMP/redis.csv" || echo ",,,0,0,0")
    ratio=$(awk -v a="$rps" -v b="$rrps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    printf '%-6s %7s | %10.0f %8.1f %8.1f %6s | %-5s %10.0f %8.1f %8.1f | %11s\n' \
        "$tr" "$c" "$rps" "$p50" "$p99" "$err" "$how" "$rrps" "$rp50" "$rp99" "$ratio"
done
echo
echo "# redis-benchmark, both PING forms (how,clients,test,req/s,p50_us,p99_us)"
cat "$TMP/redis.csv"
