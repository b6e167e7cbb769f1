#!/usr/bin/env bash
# `weft rados bench` against `rados bench` (librados) on the same loopback
# Ceph cluster, in the same run: 4 MiB and 4 KiB objects, write then seq then
# rand, 16 and 1 in flight. Prints one line per (tool, size, in-flight, mode).
#   SECONDS_EACH=5 bench/rados.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
shared=${WEFT_SHARED:-$(cd "$root/.." && pwd)/shared}
secs=${SECONDS_EACH:-5}
bash scripts/peers/ceph.sh
cargo build --release -q -p weft
weft=$root/target/release/weft
eval "$(bash "$shared/scripts/ceph/ceph-up.sh")"
trap 'bash "$shared/scripts/ceph/ceph-down.sh" >/dev/null 2>&1 || true' EXIT
pool=${CEPH_POOL:-test}
# rados bench output and `weft rados bench` output share the same lines.
summary() { awk '/Bandwidth \(MB\/sec\)/{bw=$3} /Average IOPS/{iops=$3} /Average Latency\(s\)/{lat=$3} END{printf "%8s MB/s %8s IOPS  avg latency %s s", bw, iops, lat}'; }
echo "tool   size      t  mode   result"
for size in 4194304 4096; do
  for t in 16 1; do
    [ "$size" = 4194304 ] && [ "$t" = 1 ] && continue
    # Each tool writes (keeping its objects), reads them back in order and at
    # random, then cleans up, before the other tool runs: seq/rand read the
    # objects of the same tool's last write.
    for tool in rados weft; do
      for mode in write seq rand; do
        # -b only with write (rados refuses it for seq/rand).
        extra=(); [ "$mode" = write ] && extra=(-b "$size" --no-cleanup)
        if [ "$tool" = rados ]; then
          r=$(rados -c "$CEPH_CONF" -p "$pool" bench "$secs" "$mode" -t "$t" "${extra[@]}" 2>/dev/null | summary)
        else
          r=$("$weft" rados -c "$CEPH_CONF" -p "$pool" bench "$secs" "$mode" -t "$t" "${extra[@]}" 2>/dev/null | summary)
        fi
        printf '%-6s %-9s %-2s %-6s %s\n' "$tool" "$size" "$t" "$mode" "$r"
      done
      rados -c "$CEPH_CONF" -p "$pool" cleanup >/dev/null 2>&1 || true
    done
  done
done
