#!/usr/bin/env bash
# Request/response round trips: `weft serve` answering weft.ping over TCP,
# Unix sockets and UDP, next to redis-server answering PING to
# redis-benchmark, at the same concurrencies, in one run.
#
#   bench/rr.sh                        # 1, 16, 64 clients, 3 s per run, 3 rounds
#   DURATION=5 CLIENTS=1,8 ROUNDS=5 bench/rr.sh   # median of ROUNDS rounds (default 3)
#   WORKLOAD=echo PAYLOAD=64 bench/rr.sh   # weft.echo of 64 bytes instead of ping
#   WEFT_THREADS=1 bench/rr.sh         # weft serve on one runtime thread, like redis
#   CONN_THREADS=0 bench/rr.sh         # net.connection_threads=0: TCP and Unix connections on
#                                      # the main runtime (default: auto, half the cores;
#                                      # docs/BENCHMARKS.md, "Connection threads", issue #18)
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
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-1,16,64}
WORKLOAD=${WORKLOAD:-ping}
PAYLOAD=${PAYLOAD:-16}
WEFT_THREADS=${WEFT_THREADS:-}
CONN_THREADS=${CONN_THREADS:-}
NICE=${NICE:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
# Every server and load generator runs at the same niceness, so both sides
# get the same share of a busy machine.
# (`nice` and `env` exec the program, so $! is the server's own pid.)
RUN=(nice -n "$NICE")
WEFT_ENV=(env)
# tokio sizes its worker pool from TOKIO_WORKER_THREADS (default: one per core).
[ -z "$WEFT_THREADS" ] || WEFT_ENV+=("TOKIO_WORKER_THREADS=$WEFT_THREADS")
[ -z "$CONN_THREADS" ] || WEFT_ENV+=("WEFT_NET_CONNECTION_THREADS=$CONN_THREADS")

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

# --- servers ------------------------------------------------------------
TCP_PORT=$(free_port); UDP_PORT=$(free_port); REDIS_PORT=$(free_port)
mkdir -p "$TMP/weft" "$TMP/redis"
"${WEFT_ENV[@]}" "${RUN[@]}" "$WEFT" serve --data-dir "$TMP/weft" --tcp-addr "127.0.0.1:$TCP_PORT" --udp-addr "127.0.0.1:$UDP_PORT" \
    --log warn >"$TMP/weft.log" 2>&1 &
PIDS+=($!)
"${RUN[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes --save '' --appendonly no \
    --dir "$TMP/redis" --unixsocket "$TMP/redis/redis.sock" --unixsocketperm 700 \
    --daemonize no --logfile "$TMP/redis.log" &
PIDS+=($!)
wait_until 15 "$WEFT" ping --addr "tcp://127.0.0.1:$TCP_PORT" --timeout-ms 500 \
    || { cat "$TMP/weft.log" >&2; exit 1; }
log "weft serve up (pid ${PIDS[0]}): tcp $TCP_PORT, udp $UDP_PORT, unix $TMP/weft/weft.sock"
wait_until 15 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping || { cat "$TMP/redis.log" >&2; exit 1; }
log "redis-server up (pid ${PIDS[1]}): tcp $REDIS_PORT, unix $TMP/redis/redis.sock"

# --- load -----------------------------------------------------------------
# weft-bench also runs its loop against redis-server (RESP PING, transports
# redis-tcp and redis-unix): both servers measured by one generator and one
# clock, beside redis-benchmark's own numbers (ping only).
REDIS_VIA_BENCH=()
[ "$WORKLOAD" != ping ] || REDIS_VIA_BENCH=(--redis-addr "redis://127.0.0.1:$REDIS_PORT" --redis-addr "redis+unix://$TMP/redis/redis.sock")
weft_run() { # round clients -> "round,transport,clients,rps,p50_us,p99_us,errors" lines
    timeout 300 "${RUN[@]}" "$BENCH" --addr "tcp://127.0.0.1:$TCP_PORT" --addr "unix://$TMP/weft/weft.sock" \
        --addr "udp://127.0.0.1:$UDP_PORT" "${REDIS_VIA_BENCH[@]}" --clients "$2" --duration "$DURATION" \
        --workload "$WORKLOAD" --payload "$PAYLOAD" --format csv \
        | awk -F, -v r="$1" 'NR > 1 { print r "," $1 "," $3 "," $7 "," $8 "," $9 "," $5 }'
}

# redis-benchmark runs a request count, not a duration: a calibration run
# (first round only) sizes -n so each measured run lasts about DURATION s.
declare -A REDIS_N
redis_run() { # round tcp|unix clients -> "round,how,clients,test,rps,p50_us,p99_us" lines
    local round=$1 how=$2 c=$3 target rps
    if [ "$how" = unix ]; then target=(-s "$TMP/redis/redis.sock"); else target=(-h 127.0.0.1 -p "$REDIS_PORT"); fi
    if [ -z "${REDIS_N[$how,$c]:-}" ]; then
        rps=$(timeout 60 "${RUN[@]}" redis-benchmark "${target[@]}" -t ping -c "$c" -n 20000 -P 1 --csv \
            | awk -F'","' '/PING_MBULK/ {print int($2)}')
        REDIS_N[$how,$c]=$(awk -v r="${rps:-0}" -v d="$DURATION" \
            'BEGIN { n = int(r * d); if (n < 10000) n = 10000; if (n > 5000000) n = 5000000; print n }')
    fi
    timeout 300 "${RUN[@]}" redis-benchmark "${target[@]}" -t ping -c "$c" -n "${REDIS_N[$how,$c]}" -P 1 --csv \
        | tr -d '"' | awk -F, -v p="$round,$how,$c" 'NR > 1 { printf "%s,%s,%s,%.1f,%.1f\n", p, $1, $2, $5 * 1000, $7 * 1000 }'
}

# Rounds, and within a round weft and redis back to back at each client
# count, so that both sides see the same moments of a busy machine; the
# table reports each row's median round.
: >"$TMP/weft.csv"; : >"$TMP/redis.csv"
for round in $(seq 1 "$ROUNDS"); do
    for c in ${CLIENTS//,/ }; do
        log "round $round/$ROUNDS, $c clients: weft-bench ($WORKLOAD; tcp, unix, udp; redis tcp, unix), redis-benchmark (tcp, unix)"
        weft_run "$round" "$c" >>"$TMP/weft.csv"
        redis_run "$round" tcp "$c" >>"$TMP/redis.csv"
        redis_run "$round" unix "$c" >>"$TMP/redis.csv"
    done
done

# --- table ----------------------------------------------------------------
# The median round of each row by req/s (the lower middle when ROUNDS is
# even), with that round's latencies. Input: key fields first, then rps.
median() { # number of key fields
    awk -F, -v k="$1" '
        { key = $2; for (i = 3; i <= k + 1; i++) key = key "," $i
          n[key]++; row[key, n[key]] = $0; rps[key, n[key]] = $(k + 2) + 0
          if (!(key in seen)) { seen[key] = 1; order[++keys] = key } }
        END { for (j = 1; j <= keys; j++) { key = order[j]; m = n[key]
                for (a = 1; a <= m; a++) idx[a] = a
                for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++)
                    if (rps[key, idx[b]] < rps[key, idx[a]]) { t = idx[a]; idx[a] = idx[b]; idx[b] = t }
                print row[key, idx[int((m + 1) / 2)]] } }'
}
median 2 <"$TMP/weft.csv" >"$TMP/weft.median"
median 3 <"$TMP/redis.csv" >"$TMP/redis.median"
# Errors are summed over the rounds.
declare -A ERRORS
while IFS=, read -r _r tr c _rps _p50 _p99 err; do
    ERRORS[$tr,$c]=$(( ${ERRORS[$tr,$c]:-0} + err ))
done <"$TMP/weft.csv"

# Each weft row is set against redis PING_MBULK (the RESP array form every
# client library sends) at the same concurrency: over the Unix socket for
# weft's unix rows, over TCP otherwise (redis has no UDP). `weft/redis` is
# the ratio of req/s (above 1: weft answers more), `p50 w/r` the ratio of
# median latencies (below 1: weft answers sooner), both against
# redis-benchmark's numbers. The last six columns are redis-server measured
# by weft-bench itself (`wb>redis`: same loop, same clock) and the three
# ratios against it: req/s, p50, p99 (weft over redis). redis-benchmark's
# latency starts when its event loop writes the request, after serving the
# other ready clients; weft-bench's when a client asks: only the second set
# compares like with like.
echo
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# weft $WORKLOAD vs redis PING_MBULK, -P 1, ${DURATION}s per run, median of $ROUNDS rounds,"
echo "# weft serve threads ${WEFT_THREADS:-$(nproc)}, connection threads ${CONN_THREADS:-auto}, nice $NICE; latencies in microseconds"
printf '%-6s %7s | %10s %8s %8s %6s | %-5s %10s %8s %8s | %10s %9s | %10s %8s %8s | %6s %6s %6s\n' \
    transport clients "weft req/s" p50 p99 errors redis "req/s" p50 p99 "weft/redis" "p50 w/r" \
    "wb>redis/s" p50 p99 "req/s" "p50" "p99"
for tr in tcp unix udp; do
    for c in ${CLIENTS//,/ }; do
        IFS=, read -r _r _t _c rps p50 p99 _e < <(grep "^[0-9]*,$tr,$c," "$TMP/weft.median" || echo ",,,0,0,0,0")
        how=tcp; [ "$tr" = unix ] && how=unix
        IFS=, read -r _r _h _c _t rrps rp50 rp99 < <(grep "^[0-9]*,$how,$c,PING_MBULK," "$TMP/redis.median" || echo ",,,,0,0,0")
        IFS=, read -r _r _t _c brps bp50 bp99 _e < <(grep "^[0-9]*,redis-$how,$c," "$TMP/weft.median" || echo ",,,0,0,0,0")
        ratio=$(awk -v a="$rps" -v b="$rrps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
        lratio=$(awk -v a="$p50" -v b="$rp50" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
        bratio=$(awk -v a="$rps" -v b="$brps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
        b50=$(awk -v a="$p50" -v b="$bp50" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
        b99=$(awk -v a="$p99" -v b="$bp99" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
        printf '%-6s %7s | %10.0f %8.1f %8.1f %6s | %-5s %10.0f %8.1f %8.1f | %10s %9s | %10.0f %8.1f %8.1f | %6s %6s %6s\n' \
            "$tr" "$c" "$rps" "$p50" "$p99" "${ERRORS[$tr,$c]:-0}" "$how" "$rrps" "$rp50" "$rp99" "$ratio" "$lratio" \
            "$brps" "$bp50" "$bp99" "$bratio" "$b50" "$b99"
    done
done
echo
echo "# every round (round,transport,clients,req/s,p50_us,p99_us,errors)"
cat "$TMP/weft.csv"
echo "# every redis-benchmark round, both PING forms (round,how,clients,test,req/s,p50_us,p99_us)"
cat "$TMP/redis.csv"
