#!/usr/bin/env bash
# pvAccess benchmark, Weft vs p4p, on loopback (see docs/pva.md "Benchmarks").
#  1. same p4p client (shared/scripts/pva/bench.py) against the p4p server (peer.py)
#     and against the Weft server (examples/bench_peer), interleaved;
#  2. Weft client (examples/bench_client) against the same p4p server.
# Usage: crates/weft-pva/bench.sh [ROUNDS]   (results in $OUT, default /tmp/weft-pva-bench)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SHARED="${WEFT_SHARED:-$ROOT/../shared}"
PY="${WEFT_PYTHON:-$ROOT/.venv/bin/python}"
OUT="${OUT:-/tmp/weft-pva-bench}"
ROUNDS="${1:-2}"
mkdir -p "$OUT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-pva}"
cargo build --release -q -p weft-pva --example bench_peer --example bench_client
BP="$CARGO_TARGET_DIR/release/examples/bench_peer"
BC="$CARGO_TARGET_DIR/release/examples/bench_client"
cd "$SHARED/scripts/pva"
peer() {
    "$PY" peer.py --tcp-port 5475 --udp-port 5476 --prefix bench: --array-size 100000 "$@" > "$OUT/peer.out" 2>&1 &
    PP=$!
    for _ in $(seq 100); do grep -q READY "$OUT/peer.out" && return; sleep 0.1; done
    echo "peer.py did not start" >&2; exit 1
}
for i in $(seq "$ROUNDS"); do
    for who in p4p weft; do
        if [ "$who" = weft ]; then pc="$BP"; else pc="$PY $SHARED/scripts/pva/peer.py"; fi
        "$PY" bench.py --seconds 3 --gets 1000 --tcp-port 5375 --udp-port 5376 --peer-cmd "$pc" \
            --json "$OUT/server_${who}_$i.json" > /dev/null
    done
    peer --rate 0 --array-rate 0;  "$BC" --udp-port 5476 --mode scalar  > "$OUT/client_weft_scalar_$i.json"; kill $PP; wait $PP || true
    peer --rate 1 --array-rate -1; "$BC" --udp-port 5476 --mode array   > "$OUT/client_weft_array_$i.json";  kill $PP; wait $PP || true
    peer --rate 1 --array-rate 0;  "$BC" --udp-port 5476 --mode latency > "$OUT/client_weft_lat_$i.json";    kill $PP; wait $PP || true
done
"$PY" - "$OUT" "$ROUNDS" <<'PYEOF'
import json, sys, statistics as st
out, n = sys.argv[1], int(sys.argv[2])
med = lambda xs: round(st.median(xs), 1)
def srv(who, k, f): return [json.load(open(f"{out}/server_{who}_{i}.json"))[k][f] for i in range(1, n + 1)]
def cli(m, k, f): return [json.load(open(f"{out}/client_weft_{m}_{i}.json"))[k][f] if k else json.load(open(f"{out}/client_weft_{m}_{i}.json"))[f] for i in range(1, n + 1)]
rows = [
 ("scalar monitor updates/s", med(srv("p4p","monitor_scalar","updates_per_s")), med(srv("weft","monitor_scalar","updates_per_s")), med(cli("scalar",None,"updates_per_s"))),
 ("1e5-double monitor updates/s", med(srv("p4p","monitor_array","updates_per_s")), med(srv("weft","monitor_array","updates_per_s")), med(cli("array",None,"updates_per_s"))),
 ("get int32 median us", med(srv("p4p","get_scalar_rtt","median_us")), med(srv("weft","get_scalar_rtt","median_us")), med(cli("lat","get_scalar_rtt","median_us"))),
 ("get 1e5 doubles median us", med(srv("p4p","get_array_rtt","median_us")), med(srv("weft","get_array_rtt","median_us")), med(cli("lat","get_array_rtt","median_us"))),
 ("put int32 median us", med(srv("p4p","put_scalar_rtt","median_us")), med(srv("weft","put_scalar_rtt","median_us")), med(cli("lat","put_scalar_rtt","median_us"))),
]
print("| metric | p4p client + p4p server | p4p client + Weft server | Weft client + p4p server |")
print("| --- | --- | --- | --- |")
for r in rows: print("| %s | %s | %s | %s |" % r)
PYEOF
