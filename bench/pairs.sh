#!/usr/bin/env bash
# Two builds of weft, alternately, under one produce load (the log.sh shape:
# 1 KiB x 1 record per request, 4 producers x 64 in flight by default), to
# tell a small change from this machine's run-to-run spread. Per run: the
# records/s and latency weft-logbench saw, the server's own time per produce
# (its request-duration histogram), its fsyncs, and the CPU of both
# processes. Results: docs/BENCHMARKS.md (issue #18, sixth round).
#
#   A=/work/bin/c9/release/weft B=target/release/weft bench/pairs.sh
#   PAIRS=6 FSYNC=interval:5 A=... B=... bench/pairs.sh
#
# Knobs: A, B (weft binaries; required), LOGBENCH (weft-logbench; default next
# to B), PAIRS (6), FSYNC (always), PRODUCERS (4), WINDOW (64), SIZE (1024),
# DURATION_MS (4000), PORT (27451; HTTP on PORT+1). Everything binds 127.0.0.1;
# each server is stopped by pid and its data removed.
set -euo pipefail
: "${A:?A=path of the first weft binary}" "${B:?B=path of the second weft binary}"
LOGBENCH=${LOGBENCH:-$(dirname "$B")/weft-logbench}
PAIRS=${PAIRS:-6}; FSYNC=${FSYNC:-always}; PRODUCERS=${PRODUCERS:-4}; WINDOW=${WINDOW:-64}
SIZE=${SIZE:-1024}; DURATION_MS=${DURATION_MS:-4000}; PORT=${PORT:-27451}
HTTP=$((PORT + 1))
OUT=$(mktemp -d /tmp/weft-pairs.XXXXXX)
for p in "$PORT" "$HTTP"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "pairs.sh: port $p is in use" >&2; exit 1; fi
done
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
metric() { awk -v k="$1" '$1 == k {print $2}' "$2"; }

run() { # label index binary
    local d=$OUT/$1-$2 sp lp s0 s1 t0 t1
    mkdir -p "$d"
    "$3" serve --data-dir "$d/data" --tcp-addr "127.0.0.1:$PORT" --disable udp --http-addr "127.0.0.1:$HTTP" \
        --fsync "$FSYNC" > "$d/server.log" 2>&1 & sp=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null && break; sleep 0.1; done
    t0=$(date +%s%N); s0=$(ticks $sp)
    "$LOGBENCH" run --system weft --target "tcp://127.0.0.1:$PORT" --label "$1" --pid $sp --sizes "$SIZE" \
        --producers "$PRODUCERS" --windows "$WINDOW" --duration-ms "$DURATION_MS" --max-records 5000000 \
        --out "$d/run.jsonl" > "$d/logbench.out" 2>&1 & lp=$!
    wait $lp
    t1=$(date +%s%N); s1=$(ticks $sp)
    curl -s "http://127.0.0.1:$HTTP/metrics" > "$d/metrics.txt"
    kill $sp; wait $sp 2>/dev/null || true
    rm -rf "$d/data"
    local hz elapsed line sum count fsyncs
    hz=$(getconf CLK_TCK); elapsed=$(( (t1 - t0) / 1000000 ))
    line=$(grep -o "produced=.*p99=[0-9.]*ms" "$d/logbench.out" | head -1 | tr -s ' ')
    sum=$(metric 'weft_request_duration_seconds_sum{endpoint="log.produce"}' "$d/metrics.txt")
    count=$(metric 'weft_request_duration_seconds_count{endpoint="log.produce"}' "$d/metrics.txt")
    fsyncs=$(metric weft_log_fsyncs_total "$d/metrics.txt")
    printf '%s %s | server %s us/produce, %s fsyncs, %s records/fsync, cpu %s %% of a core\n' "$1" "$line" \
        "$(awk -v s="$sum" -v c="$count" 'BEGIN{printf "%.0f", c ? s / c * 1e6 : 0}')" "$fsyncs" \
        "$(awk -v f="$fsyncs" -v c="$count" 'BEGIN{printf "%.0f", f ? c / f : 0}')" \
        "$(awk -v t=$((s1 - s0)) -v hz="$hz" -v ms="$elapsed" 'BEGIN{printf "%.0f", t / hz / (ms / 1000) * 100}')"
}

echo "pairs.sh: A=$A B=$B fsync=$FSYNC ${PRODUCERS}x${WINDOW} size=$SIZE; load $(cut -d' ' -f1-3 /proc/loadavg); out $OUT"
for i in $(seq "$PAIRS"); do
    run A "$i" "$A" | tee -a "$OUT/results.txt"
    run B "$i" "$B" | tee -a "$OUT/results.txt"
done
awk '{for (i = 1; i <= NF; i++) if ($i == "rec/s") r[$1] = r[$1] " " $(i - 1)} END {
    for (k in r) { n = split(r[k], v, " "); s = 0; for (j = 1; j <= n; j++) s += v[j]; printf "%s mean %.0f records/s over %d runs:%s\n", k, s / n, n, r[k] } }' "$OUT/results.txt"
