#!/usr/bin/env bash
# `weft rados bench` against `rados bench` (librados) on the same loopback
# Ceph cluster, in the same run: 4 MiB and 4 KiB objects, write then seq then
# rand, 16 and 1 in flight. Prints one line per (tool, size, in-flight, mode).
#   SECONDS_EACH=5 bench/rados.sh
# CONNS="1 2 4" adds weft alone with that many msgr2 sessions per OSD
# (--conns-per-osd), 16 in flight, write then seq; COMPARE=0 skips the
# rados/weft comparison (only the CONNS rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
shared=${WEFT_SHARED:-$(cd "$root/.." && pwd)/shared}
secs=${SECONDS_EACH:-5}
bash scripts/peers/ceph.sh
# WEFT_BIN: a weft binary to use instead of building the release one
if [ -n "${WEFT_BIN:-}" ]; then
  weft=$WEFT_BIN
else
  cargo build --release -q -p weft
  weft=${CARGO_TARGET_DIR:-$root/target}/release/weft
fi
eval "$(bash "$shared/scripts/ceph/ceph-up.sh")"
trap 'bash "$shared/scripts/ceph/ceph-down.sh" >/dev/null 2>&1 || true' EXIT
pool=${CEPH_POOL:-test}
# Every command's stderr goes to this log; a failing command prints it and
# the script stops with that command's status (stderr used to go to
# /dev/null, which lost the cause of a failure seen twice here).
log=$(mktemp /tmp/weft-bench-rados.XXXXXX.log)
# run TOOL ARGS...: the tool's stdout (its stderr appended to $log)
run() {
  echo "== $*" >>"$log"
  local rc=0
  "$@" 2>>"$log" || rc=$?
  if [ "$rc" != 0 ]; then
    { echo "FAILED (exit $rc): $*"; echo "--- stderr log $log:"; tail -n 50 "$log"; } >&2
    return "$rc"
  fi
}
# Start from an empty pool: leftovers of an earlier run (either tool's)
# would be read or overwritten by this one.
run rados -c "$CEPH_CONF" -p "$pool" cleanup >/dev/null
run "$weft" rados -c "$CEPH_CONF" -p "$pool" cleanup >/dev/null
# rados bench output and `weft rados bench` output share the same lines.
summary() { awk '/Bandwidth \(MB\/sec\)/{bw=$3} /Average IOPS/{iops=$3} /Average Latency\(s\)/{lat=$3} END{printf "%8s MB/s %8s IOPS  avg latency %s s", bw, iops, lat}'; }
[ "${COMPARE:-1}" = 0 ] || echo "tool   size      t  mode   result"
for size in 4194304 4096; do
  [ "${COMPARE:-1}" = 0 ] && break
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
          out=$(run rados -c "$CEPH_CONF" -p "$pool" bench "$secs" "$mode" -t "$t" "${extra[@]}")
        else
          out=$(run "$weft" rados -c "$CEPH_CONF" -p "$pool" bench "$secs" "$mode" -t "$t" "${extra[@]}")
        fi
        printf '%-6s %-9s %-2s %-6s %s\n' "$tool" "$size" "$t" "$mode" "$(summary <<<"$out")"
      done
      # each tool removes its own objects (`rados cleanup` only knows
      # rados's names; weft's 4 MiB objects used to stay in the pool for
      # the 4 KiB rounds)
      if [ "$tool" = rados ]; then
        run rados -c "$CEPH_CONF" -p "$pool" cleanup >/dev/null
      else
        run "$weft" rados -c "$CEPH_CONF" -p "$pool" cleanup >/dev/null
      fi
    done
  done
done
# Sessions per OSD: weft alone, the same sizes, 16 in flight.
if [ -n "${CONNS:-}" ]; then
  echo "conns  size      t  mode   result"
  for size in 4194304 4096; do
    for c in $CONNS; do
      for mode in write seq; do
        extra=(); [ "$mode" = write ] && extra=(-b "$size" --no-cleanup)
        out=$(run "$weft" rados -c "$CEPH_CONF" -p "$pool" --conns-per-osd "$c" bench "$secs" "$mode" -t 16 "${extra[@]}")
        printf '%-6s %-9s %-2s %-6s %s\n' "$c" "$size" 16 "$mode" "$(summary <<<"$out")"
      done
      run "$weft" rados -c "$CEPH_CONF" -p "$pool" cleanup >/dev/null
    done
  done
fi
rm -f "$log"
