#!/usr/bin/env bash
# Request/response round trips over plain TCP, TLS and QUIC in one run. The
# server is the weft-net example `rr serve` (weft-net's Server with the
# Service's standard endpoints on all three listeners, development
# certificates), the load generator `rr load` (closed loop, one connection
# per client, weft.ping or weft.echo), in two processes.
#
#   bench/tls.sh                           # 1, 16, 64 clients, 3 s per run, 3 rounds
#   CLIENTS=1,16 DURATION=5 ROUNDS=5 bench/tls.sh
#   WORKLOAD=echo PAYLOAD=1024 bench/tls.sh
#   MTLS=1 bench/tls.sh                    # require client certificates
#   BUILD=0 bench/tls.sh                   # use the release binary already built
#
# Everything listens on 127.0.0.1; every run is bounded; only the processes
# started here are stopped (by pid). The table reports each row's median
# round by req/s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-1,16,64}
WORKLOAD=${WORKLOAD:-ping}
PAYLOAD=${PAYLOAD:-16}
MTLS=${MTLS:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}

log() { echo "tls.sh: $*" >&2; }

if [ "${BUILD:-1}" != 0 ]; then
    log "building the release example (weft-net rr)"
    (cd "$ROOT" && cargo build --release -q -p weft-net --example rr)
fi
RR=$CARGO_TARGET_DIR/release/examples/rr

TMP=$(mktemp -d /tmp/weft-tls-bench.XXXXXX)
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

TCP_PORT=$(free_port); TLS_PORT=$(free_port); QUIC_PORT=$(free_port)
AUTH=none; MTLS_FLAG=()
[ "$MTLS" = 1 ] && { AUTH=require; MTLS_FLAG=(--mtls); }
"$RR" serve --certs "$TMP/certs" --tcp "127.0.0.1:$TCP_PORT" --tls "127.0.0.1:$TLS_PORT" \
    --quic "127.0.0.1:$QUIC_PORT" "${MTLS_FLAG[@]}" >"$TMP/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do
    grep -q ready "$TMP/serve.log" 2>/dev/null && break
    sleep 0.1
done
grep -q ready "$TMP/serve.log" || { cat "$TMP/serve.log" >&2; exit 1; }
export WEFT_TLS_CA=$TMP/certs/ca.pem
if [ "$MTLS" = 1 ]; then
    export WEFT_TLS_CLIENT_CERT=$TMP/certs/client.pem WEFT_TLS_CLIENT_KEY=$TMP/certs/client.key
fi
log "rr serve up (pid ${PIDS[0]}): tcp $TCP_PORT, tls $TLS_PORT, quic $QUIC_PORT, client_auth $AUTH"

: >"$TMP/all.csv"
for round in $(seq 1 "$ROUNDS"); do
    log "round $round/$ROUNDS: tcp, tls, quic at $CLIENTS clients"
    timeout 600 "$RR" load --addr "tcp://127.0.0.1:$TCP_PORT" --addr "tls://127.0.0.1:$TLS_PORT" \
        --addr "quic://127.0.0.1:$QUIC_PORT" --clients "$CLIENTS" --duration "$DURATION" \
        --workload "$WORKLOAD" --payload "$PAYLOAD" | awk -v r="$round" 'NR > 1 { print r "," $0 }' >>"$TMP/all.csv"
done

echo
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# weft $WORKLOAD over tcp, tls, quic (client_auth $AUTH), ${DURATION}s per run, median of $ROUNDS rounds; latencies in microseconds"
printf '%-6s %7s | %10s %8s %8s %6s | %9s\n' transport clients "req/s" p50 p99 errors "vs tcp"
# round,transport,clients,requests,rps,p50,p99,errors -> median round per (transport, clients)
sort -t, -k2,2 -k3,3n -k5,5n "$TMP/all.csv" | awk -F, -v rounds="$ROUNDS" '
    { key = $2 "," $3; n[key]++; row[key, n[key]] = $0; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
    END { for (i = 1; i <= k; i++) { key = order[i]; print row[key, int((n[key] + 1) / 2)] } }' >"$TMP/median.csv"
declare -A TCP_RPS
while IFS=, read -r _r tr c _n rps _p50 _p99 _e; do
    [ "$tr" = tcp ] && TCP_RPS[$c]=$rps
done <"$TMP/median.csv"
for tr in tcp tls quic; do
    for c in ${CLIENTS//,/ }; do
        IFS=, read -r _r _t _c _n rps p50 p99 err < <(grep "^[0-9]*,$tr,$c," "$TMP/median.csv" || echo ",,,,0,0,0,0")
        ratio=$(awk -v a="$rps" -v b="${TCP_RPS[$c]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
        printf '%-6s %7s | %10.0f %8s %8s %6s | %9s\n' "$tr" "$c" "$rps" "$p50" "$p99" "$err" "$ratio"
    done
done
echo
echo "# every round (round,transport,clients,requests,req/s,p50_us,p99_us,errors)"
cat "$TMP/all.csv"
