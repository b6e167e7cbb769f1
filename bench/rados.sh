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
echo "tool   size    t   mode   result"
for size in 4194304 4096; do
  for t in 16 1; do
    [ "$size" = 4194304 ] && [ "$t" = 1 ] && continue
    for mode in write seq rand; do
      extra=(); [ "$mode" = write ] && extra=(--no-cleanup)
      r=$(rados -c "$CEPH_CONF" -p "$pool" bench "$secs" "$mode" -b "$size" -t "$t" "${extra[@]}" 2>/dev/null \
          | awk '/Bandwidth \(MB\/sec\)/{bw=$3} /Average IOPS/{iops=$3} END{printf "%s MB/s %s IOPS", bw, iops}')
      echo "rados  $size $t $mode  $r"
      w=$("$weft" rados -c "$CEPH_CONF" -p "$pool" bench "$secs" "$mode" -b "$size" -t "$t" 2>/dev/null | tail -3 | tr '\n' ' ')
      echo "weft   $size $t $mode  $w"
    done
    rados -c "$CEPH_CONF" -p "$pool" cleanup >/dev/null 2>&1 || true
  done
done
