#!/usr/bin/env bash
# 3-node clusters, side by side (issue #12): NATS JetStream (Debian's nats-server, routes on
# loopback, streams with 3 replicas, file storage) and Weft (3 `weft serve` nodes, topics
# with 3 replicas through log.topic.create; produce and read-back through log.produce /
# log.fetch at the partition's leader, not_leader followed). The same load generator
# (weft-logbench) drives both: 1 KiB records, 1 and 4 producers, 1 and 64 requests in flight,
# and batched (Weft only: JetStream publishes one message per request); produce records/s and
# p50/p99 ack latency, consume records/s. Every run also records each server's disk writes
# over its produce phase (/proc/PID/io write_bytes, until every Weft replica holds every
# acknowledged record). Then a single `weft serve` (no cluster) with the same matrix, the
# baseline for what replication costs. Then the failover time: kill -9 of the stream /
# partition leader to the first acknowledged produce, FAILOVERS times each (the killed
# server is restarted between). Last, unless DISK=0, a disk pass: fresh servers started
# under `strace -f --seccomp-bpf -e trace=fsync,fdatasync` (only those calls stop, so the
# timed runs above are not traced) produce a fixed count, and bytes and fsyncs per record
# per server are printed. Ratios weft-r3/jetstream-r3 and weft-r3/weft-1node are printed.
# Results: docs/BENCHMARKS.md.
#
#   bench/cluster.sh                                   # ~5 min on 2 cores
#   DURATION_MS=1000 FAILOVERS=1 DISK=0 bench/cluster.sh   # a quick look
#
# Knobs (defaults): SYSTEMS (jetstream,weft,weft1), SIZES (1024), PRODUCERS (1,4), WINDOWS
# (1,64), BATCHES (100, BATCH_WINDOW=8), DURATION_MS (3000), MAX_RECORDS (1000000),
# FAILOVERS (3), DISK (1), DISK_RECORDS (20000), OUT (results dir; default a new
# /tmp/weft-cluster-bench.XXXXXX), NO_BUILD=1, CARGO_TARGET_DIR.
# Builds into ./target (or CARGO_TARGET_DIR), release. Every server's pid is kept and ended on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SYSTEMS=${SYSTEMS:-jetstream,weft,weft1}
SIZES=${SIZES:-1024}
PRODUCERS=${PRODUCERS:-1,4}
WINDOWS=${WINDOWS:-1,64}
BATCHES=${BATCHES:-100}
BATCH_WINDOW=${BATCH_WINDOW:-8}
DURATION_MS=${DURATION_MS:-3000}
MAX_RECORDS=${MAX_RECORDS:-1000000}
FAILOVERS=${FAILOVERS:-3}
DISK=${DISK:-1}
DISK_RECORDS=${DISK_RECORDS:-20000}
OUT=${OUT:-$(mktemp -d /tmp/weft-cluster-bench.XXXXXX)}
mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
LB=${LB_BIN:-$TARGET/weft-logbench}
WEFT=${WEFT_BIN:-$TARGET/weft}   # WEFT_BIN: another build (a debug one checks the script, gives no numbers)

log() { echo "cluster.sh: $*" >&2; }
has() { [[ ",$SYSTEMS," == *",$1,"* ]]; }

if has jetstream && ! command -v nats-server >/dev/null; then
    log "installing nats-server"; apt-get install -y -q nats-server >/dev/null
fi
if [ "$DISK" = 1 ] && ! strace -f --seccomp-bpf -qq -e trace=fsync -o /dev/null true 2>/dev/null; then
    log "no strace with --seccomp-bpf: the disk pass counts bytes only"; STRACE=0
else
    STRACE=1
fi
if [ "${NO_BUILD:-0}" != 1 ]; then
    log "building weft-logbench and weft (release)"
    (cd "$ROOT" && cargo build --release -q -p weft-logbench -p weft)
fi

declare -A PID=()          # server name -> pid of the server itself
declare -A TRACER=()       # server name -> pid of the strace it runs under
stop_all() {
    for n in "${!PID[@]}"; do kill -CONT "${PID[$n]}" 2>/dev/null || true; kill "${PID[$n]}" 2>/dev/null || true; done
    for n in "${!PID[@]}"; do
        for _ in $(seq 50); do kill -0 "${PID[$n]}" 2>/dev/null || break; sleep 0.1; done
        kill -9 "${PID[$n]}" 2>/dev/null || true; wait "${PID[$n]}" 2>/dev/null || true
        unset "PID[$n]"
    done
    # strace ends when its server has.
    for n in "${!TRACER[@]}"; do wait "${TRACER[$n]}" 2>/dev/null || true; unset "TRACER[$n]"; done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# spawn NAME TRACE LOGFILE CMD...: start a server in the background; with TRACE (a file),
# under strace counting its fsync calls there. PID[NAME] is the server's own pid.
spawn() {
    local n=$1 trace=$2 logf=$3; shift 3
    if [ -n "$trace" ]; then
        # -T: time spent in each call; -y: the file it synced.
        strace -f --seccomp-bpf -qq -T -y -e trace=fsync,fdatasync -e signal=none -o "$trace" -- "$@" >>"$logf" 2>&1 &
        TRACER[$n]=$!
        # strace forks a short-lived child of its own to probe seccomp: take the one running $1.
        local child="" exe c
        exe=$(readlink -f "$(command -v "$1")")
        for _ in $(seq 100); do
            for c in $(pgrep -P "${TRACER[$n]}" || true); do
                [ "$(readlink "/proc/$c/exe" 2>/dev/null)" = "$exe" ] && child=$c
            done
            [ -n "$child" ] && break; sleep 0.05
        done
        [ -n "$child" ] || { log "$n: no process under strace ${TRACER[$n]}"; return 1; }
        PID[$n]=$child
    else
        "$@" >>"$logf" 2>&1 &
        PID[$n]=$!
    fi
}

# N free loopback ports below the ephemeral range (a bind(0) port can be handed to an
# outgoing connection before the server binds it), none of them listening now.
ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
got = []
while len(got) < int(sys.argv[1]):
    p = random.randrange(20000, 32000)
    if p in got: continue
    s = socket.socket()
    try: s.bind(("127.0.0.1", p)); got.append(p)
    except OSError: pass
    finally: s.close()
print(" ".join(map(str, got)))
PY
}
wait_tcp() { # NAME PORT
    for _ in $(seq 150); do
        kill -0 "${PID[$1]}" 2>/dev/null || { log "$1 (pid ${PID[$1]}) exited; see $OUT/$1.log"; return 1; }
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    log "$1: nothing listens on 127.0.0.1:$2"; return 1
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "uptime: $(uptime)"
    echo "filesystem: $(df -hT "$OUT" | awk 'NR==2 {print $2, $1}')"
    command -v nats-server >/dev/null && echo "nats-server: $(nats-server --version)"
    echo "weft: tree at ${TREE:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}, binary $WEFT ($(date -u -r "$WEFT" +%Y-%m-%dT%H:%MZ 2>/dev/null || echo missing))"
    echo "settings: SYSTEMS=$SYSTEMS SIZES=$SIZES PRODUCERS=$PRODUCERS WINDOWS=$WINDOWS BATCHES=$BATCHES DURATION_MS=$DURATION_MS FAILOVERS=$FAILOVERS DISK=$DISK DISK_RECORDS=$DISK_RECORDS"
} | tee "$OUT/machine.txt" >&2

FILES=()
MATRIX=(--sizes "$SIZES" --producers "$PRODUCERS" --windows "$WINDOWS" --duration-ms "$DURATION_MS" --max-records "$MAX_RECORDS")
# The disk pass: one producer, 64 in flight, plus batched; a fixed count.
DISK_MATRIX=(--sizes 1024 --producers 1 --windows 64 --duration-ms 60000 --max-records "$DISK_RECORDS")

# ---- NATS JetStream, 3 servers: js_up PHASE TRACE(0|1) sets JS_URLS, JS_IO, JS_FSYNC ----
js_start() { # NAME DIR TRACE
    local tr=""; [ "$3" = 1 ] && tr="$2/$1.fsyncs"
    spawn "$1" "$tr" "$OUT/$1.log" nats-server -c "$2/$1.conf"
}
js_up() {
    local dir="$OUT/$1" c1 c2 c3 p1 p2 p3
    read -r c1 c2 c3 p1 p2 p3 <<<"$(ports 6)"
    declare -gA CPORT=([n1]=$c1 [n2]=$c2 [n3]=$c3) CLIENT=([n1]=$p1 [n2]=$p2 [n3]=$p3)
    mkdir -p "$dir"
    for n in n1 n2 n3; do
        local routes=""
        for m in n1 n2 n3; do [ "$m" = "$n" ] || routes+="${routes:+, }nats-route://127.0.0.1:${CPORT[$m]}"; done
        cat >"$dir/$n.conf" <<CONF
server_name: $n
listen: 127.0.0.1:${CLIENT[$n]}
jetstream { store_dir: $dir/$n, max_file_store: 20G, max_memory_store: 256M }
cluster { name: lbc, listen: 127.0.0.1:${CPORT[$n]}, routes: [ $routes ] }
CONF
        js_start "$n" "$dir" "$2"
    done
    for n in n1 n2 n3; do wait_tcp "$n" "${CLIENT[$n]}"; done
    JS_URLS="nats://127.0.0.1:$p1,nats://127.0.0.1:$p2,nats://127.0.0.1:$p3"
    JS_IO="n1=${PID[n1]},n2=${PID[n2]},n3=${PID[n3]}"
    JS_FSYNC="n1=$dir/n1.fsyncs,n2=$dir/n2.fsyncs,n3=$dir/n3.fsyncs"
    JS_DIR=$dir
    # JetStream needs its meta leader before a stream can be made.
    sleep 3
    log "jetstream R3 at $JS_URLS (pids $JS_IO)"
}

# ---- Weft, 3 nodes: weft_up PHASE TRACE sets W_TARGETS, W_IO, W_FSYNC ----
weft_start() { # I DIR TRACE
    local tr=""; [ "$3" = 1 ] && tr="$2/$1.fsyncs"
    spawn "w$1" "$tr" "$OUT/weft$1.log" "$WEFT" serve --data-dir "$2/$1" --node-id "$1" --tcp-addr "127.0.0.1:${WA[$1]}" \
        --cluster-addr "127.0.0.1:${WC[$1]}" --cluster-peers "$W_PEERS" --disable udp --disable http \
        --unix-path "$2/$1.sock"
}
weft_up() {
    local dir="$OUT/$1" a1 a2 a3 c1 c2 c3
    read -r a1 a2 a3 c1 c2 c3 <<<"$(ports 6)"
    declare -gA WA=([1]=$a1 [2]=$a2 [3]=$a3) WC=([1]=$c1 [2]=$c2 [3]=$c3)
    W_PEERS="1=127.0.0.1:$c1,2=127.0.0.1:$c2,3=127.0.0.1:$c3"
    mkdir -p "$dir"
    for i in 1 2 3; do weft_start "$i" "$dir" "$2"; done
    for i in 1 2 3; do wait_tcp "w$i" "${WA[$i]}"; done
    W_TARGETS="tcp://127.0.0.1:$a1,tcp://127.0.0.1:$a2,tcp://127.0.0.1:$a3"
    W_IO="1=${PID[w1]},2=${PID[w2]},3=${PID[w3]}"
    W_FSYNC="1=$dir/1.fsyncs,2=$dir/2.fsyncs,3=$dir/3.fsyncs"
    W_DIR=$dir
    sleep 3   # the metadata group elects its leader
    log "weft R3 at $W_TARGETS (pids $W_IO)"
}

# ---- Weft, one node without cluster mode: single_up PHASE TRACE sets S_TARGET, S_IO, S_FSYNC ----
single_up() {
    local dir="$OUT/$1" a tr=""
    read -r a <<<"$(ports 1)"
    mkdir -p "$dir"
    [ "$2" = 1 ] && tr="$dir/s.fsyncs"
    spawn s "$tr" "$OUT/weft-single.log" "$WEFT" serve --data-dir "$dir/s" --tcp-addr "127.0.0.1:$a" \
        --disable udp --disable http --unix-path "$dir/s.sock"
    wait_tcp s "$a"
    S_TARGET="tcp://127.0.0.1:$a"; S_IO="1=${PID[s]}"; S_FSYNC="1=$dir/s.fsyncs"
    log "weft single node at $S_TARGET (pid ${PID[s]})"
}

if has jetstream; then
    js_up js 0
    "$LB" run --system jetstream --target "$JS_URLS" --replicas 3 --label jetstream-r3 --pid "${PID[n1]}" --io-pids "$JS_IO" \
        "${MATRIX[@]}" --out "$OUT/jetstream-r3.jsonl" || log "jetstream: some runs failed (see above)"
    FILES+=("$OUT/jetstream-r3.jsonl")
    for i in $(seq 1 "$FAILOVERS"); do
        "$LB" failover --system jetstream --target "$JS_URLS" --label jetstream-r3 --replicas 3 \
            --pids "n1=${PID[n1]},n2=${PID[n2]},n3=${PID[n3]}" --out "$OUT/failover.jsonl" \
            || log "jetstream failover $i failed"
        for n in n1 n2 n3; do
            if ! kill -0 "${PID[$n]}" 2>/dev/null; then
                wait "${PID[$n]}" 2>/dev/null || true
                log "restarting $n"; js_start "$n" "$JS_DIR" 0; wait_tcp "$n" "${CLIENT[$n]}"
            fi
        done
        sleep 3   # let the restarted server catch up before the next kill
    done
    stop_all
fi

if has weft; then
    weft_up weft 0
    "$LB" run --system weft --target "$W_TARGETS" --replicas 3 --label weft-r3 --pid "${PID[w1]}" --io-pids "$W_IO" \
        "${MATRIX[@]}" --batches "$BATCHES" --batch-window "$BATCH_WINDOW" --out "$OUT/weft-r3.jsonl" \
        || log "weft: some runs failed (see above)"
    FILES+=("$OUT/weft-r3.jsonl")
    for i in $(seq 1 "$FAILOVERS"); do
        "$LB" failover --system weft --target "$W_TARGETS" --label weft-r3 --replicas 3 \
            --pids "1=${PID[w1]},2=${PID[w2]},3=${PID[w3]}" --out "$OUT/failover.jsonl" \
            || log "weft failover $i failed"
        for n in 1 2 3; do
            if ! kill -0 "${PID[w$n]}" 2>/dev/null; then
                wait "${PID[w$n]}" 2>/dev/null || true
                log "restarting weft node $n"; weft_start "$n" "$W_DIR" 0; wait_tcp "w$n" "${WA[$n]}"
            fi
        done
        sleep 3
    done
    stop_all
fi

if has weft1; then
    single_up weft1 0
    "$LB" run --system weft --target "$S_TARGET" --label weft-1node --pid "${PID[s]}" --io-pids "$S_IO" \
        "${MATRIX[@]}" --batches "$BATCHES" --batch-window "$BATCH_WINDOW" --out "$OUT/weft-1node.jsonl" \
        || log "weft single node: some runs failed (see above)"
    FILES+=("$OUT/weft-1node.jsonl")
    stop_all
fi

# ---- Disk pass: fresh servers under strace, a fixed count per run ----
if [ "$DISK" = 1 ]; then
    D="$OUT/disk.jsonl"
    if has jetstream; then
        js_up js-disk "$STRACE"
        f=(); [ "$STRACE" = 1 ] && f=(--fsync-logs "$JS_FSYNC")
        "$LB" run --system jetstream --target "$JS_URLS" --replicas 3 --label jetstream-r3 --io-pids "$JS_IO" "${f[@]}" \
            "${DISK_MATRIX[@]}" --out "$D" || log "jetstream disk pass failed"
        stop_all
    fi
    if has weft; then
        weft_up weft-disk "$STRACE"
        f=(); [ "$STRACE" = 1 ] && f=(--fsync-logs "$W_FSYNC")
        "$LB" run --system weft --target "$W_TARGETS" --replicas 3 --label weft-r3 --io-pids "$W_IO" "${f[@]}" \
            "${DISK_MATRIX[@]}" --batches "$BATCHES" --batch-window "$BATCH_WINDOW" --out "$D" || log "weft disk pass failed"
        stop_all
    fi
    if has weft1; then
        single_up weft1-disk "$STRACE"
        f=(); [ "$STRACE" = 1 ] && f=(--fsync-logs "$S_FSYNC")
        "$LB" run --system weft --target "$S_TARGET" --label weft-1node --io-pids "$S_IO" "${f[@]}" \
            "${DISK_MATRIX[@]}" --batches "$BATCHES" --batch-window "$BATCH_WINDOW" --out "$D" || log "weft single node disk pass failed"
        stop_all
    fi
fi
echo "end: $(date -u +%Y-%m-%dT%H:%M:%SZ) uptime: $(uptime)" | tee -a "$OUT/machine.txt" >&2

existing=()
for f in "${FILES[@]}"; do [ -s "$f" ] && existing+=("$f"); done
[ ${#existing[@]} -gt 0 ] || { log "no results"; exit 1; }
"$LB" report --ratio weft-r3/jetstream-r3 --ratio weft-r3/weft-1node --all "${existing[@]}" | tee "$OUT/report.md"

# Disk writes per acknowledged record, per server: the timed runs, then the disk pass.
disk_table() { # TITLE FILE...
    local title=$1; shift
    python3 - "$title" "$@" <<'PY' | tee -a "$OUT/report.md"
import json, sys
title, files = sys.argv[1], sys.argv[2:]
rows = [json.loads(l) for f in files for l in open(f) if l.strip()]
rows = [r for r in rows if r.get("disk")]
if not rows: sys.exit(0)
print(f"\n### {title}\n")
print("| label | producers | window | batch | records | bytes written per record, per server | mean | x value size | fsyncs per record, per server | replicas caught up ms | missing where acked |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    s, n = r["scenario"], max(r["produced"], 1)
    per = [d["write_bytes"] / n for d in r["disk"]]
    fs = [d.get("fsyncs") for d in r["disk"]]
    fs_cell = " / ".join("–" if f is None else f"{f / n:.3f}" for f in fs)
    mean = sum(per) / len(per)
    cu = r.get("replicas_caught_up_ms")
    print(f"| {r['label']} | {s['producers']} | {s['window']} | {s['batch']} | {r['produced']} | "
          + " / ".join(f"{p:.0f}" for p in per) + f" | {mean:.0f} | {mean / s['size']:.2f} | {fs_cell} | {'–' if cu is None else f'{cu:.0f}'} | {r.get('home_behind', '–')} |")
PY
}
disk_table "Disk writes per acknowledged record (timed runs; /proc/PID/io write_bytes)" "${existing[@]}"
[ -s "$OUT/disk.jsonl" ] && disk_table "Disk pass: bytes and fsyncs per acknowledged record (servers under strace, $DISK_RECORDS records)" "$OUT/disk.jsonl"

# Where the traced servers' fsyncs went and how long they took (whole server lifetimes).
if compgen -G "$OUT/*-disk/*.fsyncs" >/dev/null; then
    printf '\n### fsync calls of the disk pass by file (whole lifetime of each traced server)\n\n' | tee -a "$OUT/report.md"
    python3 - "$OUT"/*-disk/*.fsyncs <<'PY' | tee -a "$OUT/report.md"
import re, sys, os
print("| server | file | calls | mean ms | total s |")
print("|---|---|---|---|---|")
call = re.compile(r"^(\d+)\s+f(?:data)?sync\(\d+<([^>]*)>")
took = re.compile(r"<([0-9.]+)>\s*$")
for f in sys.argv[1:]:
    by, open_calls = {}, {}
    for line in open(f, errors="replace"):
        pid = line.split(" ", 1)[0]
        m = call.search(line)
        if m and "<unfinished" in line:
            open_calls[pid] = m.group(2); continue
        if m: path = m.group(2)
        elif "resumed>" in line and pid in open_calls: path = open_calls.pop(pid)
        else: continue
        t = took.search(line)
        if not t: continue
        t = float(t.group(1))
        kind = re.sub(r"\d+", "N", os.path.basename(path))
        d = by.setdefault(kind, [0, 0.0]); d[0] += 1; d[1] += t
    name = f.split("/")[-2] + "/" + os.path.basename(f)[:-len(".fsyncs")]
    for kind, (n, t) in sorted(by.items(), key=lambda kv: -kv[1][0]):
        print(f"| {name} | {kind} | {n} | {1000 * t / n:.2f} | {t:.2f} |")
PY
fi

if [ -s "$OUT/failover.jsonl" ]; then
    printf '\n### Failover (kill -9 of the leader to the first acknowledged produce)\n\n' | tee -a "$OUT/report.md"
    python3 - "$OUT/failover.jsonl" <<'PY' | tee -a "$OUT/report.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| system | killed | failover ms | failed attempts |")
print("|---|---|---|---|")
for r in rows:
    print(f"| {r['label']} | {r['killed']} | {r['failover_ms']:.0f} | {r['failed_attempts']} |")
by = {}
for r in rows: by.setdefault(r['label'], []).append(r['failover_ms'])
med = {}
for k, v in by.items():
    v.sort(); med[k] = v[len(v)//2]; print(f"\n{k}: median {med[k]:.0f} ms over {len(v)}")
if "weft-r3" in med and "jetstream-r3" in med:
    print(f"\nweft-r3/jetstream-r3 failover: {med['weft-r3'] / med['jetstream-r3']:.2f}")
PY
fi
log "results in $OUT"
