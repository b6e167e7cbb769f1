#!/usr/bin/env bash
# Syscalls per request (issue #18): `strace -c -f` attached to `weft serve`
# while rrload sends N requests (ping, then one 1 KiB record per produce,
# fsync interval:5), one connection, one in flight. Loopback only; stops
# only the processes it started, by pid.
#
#   bench/syscalls.sh WEFT_BIN RRLOAD_BIN OUT_PREFIX      # N=20000 by default
# Results: docs/BENCHMARKS.md, "Per-request cost".
set -u

WEFT=$1; RR=$2; OUT=$3; N=${N:-20000}
for w in ping produce; do
  dir=$(mktemp -d /tmp/weft-st.XXXXXX)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  $WEFT serve --data-dir $dir --tcp-addr 127.0.0.1:$port --disable udp --http-addr 127.0.0.1:0 --fsync interval:5 > $OUT-$w.server.log 2>&1 &
  spid=$!
  for i in $(seq 1 50); do timeout 5 $RR --addr tcp://127.0.0.1:$port --requests 1 >/dev/null 2>&1 && break; sleep 0.2; done
  args="--addr tcp://127.0.0.1:$port"
  [ $w = produce ] && args="$args --route log.produce --topic st --size 1024" || args="$args --route weft.ping"
  [ $w = produce ] && timeout 60 $RR $args --create-topic --requests 200 >/dev/null
  strace -c -f -p $spid -o $OUT-$w.strace &
  stpid=$!
  sleep 1
  timeout 120 $RR $args --requests $N > $OUT-$w.out
  kill -INT $stpid; wait $stpid 2>/dev/null
  kill $spid; wait $spid 2>/dev/null
  rm -rf $dir
  echo "== $w $(cat $OUT-$w.out)"; head -20 $OUT-$w.strace
done
