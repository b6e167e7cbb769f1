#!/usr/bin/env bash
# Cluster scale (issue #12): 3 `weft serve` nodes on loopback, PARTITIONS partitions with
# REPLICAS replicas each (several topics when PARTITIONS is over one topic's limit), then
#   1. the time until every partition has a leader (a node that reports itself as leader),
#   2. idle CPU per node over IDLE_SECONDS (utime+stime from /proc/<pid>/stat, % of one core),
#      RSS (VmRSS) and peak RSS (VmHWM), open files and threads,
#   3. kill -9 of one node and the time until every partition has a leader again on the
#      survivors,
#   4. a produce to SAMPLE partitions before the kill and after the recovery (they serve).
# Prints a table (also in $OUT/report.md). Bounded in time; stops only the pids it started.
#
#   bench/cluster-scale.sh                           # 1000 partitions, R3 (a few minutes)
#   PARTITIONS=100 IDLE_SECONDS=10 bench/cluster-scale.sh
#
# Knobs (defaults): PARTITIONS (1000), REPLICAS (3), IDLE_SECONDS (30), SETTLE_SECONDS (40:
# after every partition has a leader, before the idle window; the default leadership balance
# waits cluster.rebalance.leader_settle_ms = 30 s, so its hand-overs are over by then),
# WAIT_SECONDS (300: bound of each wait for leaders), SAMPLE (5), KILL (3: the node killed),
# OUT (results dir; default a new /tmp/weft-cluster-scale.XXXXXX), NO_BUILD=1,
# WEFT_BIN (default $CARGO_TARGET_DIR/release/weft, CARGO_TARGET_DIR default ./target-bench).
# Any WEFT_CLUSTER_* variable in the environment reaches the nodes (e.g. WEFT_CLUSTER_QUIESCE_TICKS=0
# to compare with every group ticking).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PARTITIONS=${PARTITIONS:-1000}
REPLICAS=${REPLICAS:-3}
IDLE_SECONDS=${IDLE_SECONDS:-30}
SETTLE_SECONDS=${SETTLE_SECONDS:-40}
WAIT_SECONDS=${WAIT_SECONDS:-300}
SAMPLE=${SAMPLE:-5}
KILL=${KILL:-3}
PER_TOPIC_MAX=1000   # one topic's partitions (weft-log allows 1024 per topic)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
WEFT=${WEFT_BIN:-$CARGO_TARGET_DIR/release/weft}
OUT=${OUT:-$(mktemp -d /tmp/weft-cluster-scale.XXXXXX)}
mkdir -p "$OUT"
START=$(date +%s)
# Hard bound on the whole run: creation, settling, idle, recovery, produce, with slack.
DEADLINE=$((START + 3 * WAIT_SECONDS + SETTLE_SECONDS + IDLE_SECONDS + 120))

log() { echo "cluster-scale: $*" >&2; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
check_deadline() { [ "$(date +%s)" -lt "$DEADLINE" ] || { log "run exceeded its time bound"; exit 1; }; }

if [ "${NO_BUILD:-0}" != 1 ]; then
    log "building weft (release) into $CARGO_TARGET_DIR"
    (cd "$ROOT" && cargo build --release -q -p weft --bin weft)
fi
[ -x "$WEFT" ] || { log "no weft binary at $WEFT"; exit 1; }
[ "$REPLICAS" -ge 1 ] && [ "$REPLICAS" -le 3 ] || { log "REPLICAS must be 1..3"; exit 1; }

declare -A PID=()
stop_all() {
    for n in "${!PID[@]}"; do kill -CONT "${PID[$n]}" 2>/dev/null || true; kill "${PID[$n]}" 2>/dev/null || true; done
    for n in "${!PID[@]}"; do
        for _ in $(seq 50); do kill -0 "${PID[$n]}" 2>/dev/null || break; sleep 0.1; done
        kill -9 "${PID[$n]}" 2>/dev/null || true
        wait "${PID[$n]}" 2>/dev/null || true
        unset "PID[$n]"
    done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
read -r -a P <<<"$(ports 9)"
declare -A NAT CLU GRPC
for i in 1 2 3; do NAT[$i]=${P[$((i - 1))]}; CLU[$i]=${P[$((i + 2))]}; GRPC[$i]=${P[$((i + 5))]}; done
peers="1=127.0.0.1:${CLU[1]},2=127.0.0.1:${CLU[2]},3=127.0.0.1:${CLU[3]}"

start_node() { # I
    "$WEFT" serve --data-dir "$OUT/n$1" --node-id "$1" --tcp-addr "127.0.0.1:${NAT[$1]}" \
        --cluster-addr "127.0.0.1:${CLU[$1]}" --cluster-peers "$peers" --disable udp --disable http \
        --grpc-addr "127.0.0.1:${GRPC[$1]}" --unix-path "$OUT/n$1.sock" >>"$OUT/n$1.log" 2>&1 &
    PID[$1]=$!
}
wait_tcp() { # I
    for _ in $(seq 300); do
        kill -0 "${PID[$1]}" 2>/dev/null || { log "node $1 (pid ${PID[$1]}) exited; see $OUT/n$1.log"; return 1; }
        (exec 3<>"/dev/tcp/127.0.0.1/${NAT[$1]}") 2>/dev/null && return 0
        sleep 0.1
    done
    log "node $1: nothing listens on 127.0.0.1:${NAT[$1]}"; return 1
}
cli() { # I ARGS...
    local i=$1; shift
    timeout 90 "$WEFT" "$@" --addr "tcp://127.0.0.1:${NAT[$i]}"
}

# Topics: t0, t1, ... of at most PER_TOPIC_MAX partitions, summing to PARTITIONS.
TOPICS=()
left=$PARTITIONS; k=0
while [ "$left" -gt 0 ]; do
    n=$((left < PER_TOPIC_MAX ? left : PER_TOPIC_MAX))
    TOPICS+=("scale$k:$n"); left=$((left - n)); k=$((k + 1))
done

# Partitions with a leader: a partition counts when one of the asked nodes reports itself
# as its leader (the leader's own view; a dead node is never asked). Prints "led total".
led() { # NODES...
    local files=()
    # Asked in parallel: one status of 1000 partitions takes a good part of a second.
    for i in "$@"; do
        rm -f "$OUT/status.$i.json"
        cli "$i" cluster status --json >"$OUT/status.$i.json.tmp" 2>/dev/null && mv "$OUT/status.$i.json.tmp" "$OUT/status.$i.json" &
    done
    wait_children
    for i in "$@"; do [ -s "$OUT/status.$i.json" ] && files+=("$OUT/status.$i.json"); done
    python3 - "${files[@]}" <<'PY'
import json, sys
led, total = set(), set()
for f in sys.argv[1:]:
    try:
        s = json.load(open(f))
    except Exception:
        continue
    for p in s.get("partitions", []):
        key = (p["topic"], p["partition"])
        total.add(key)
        if p.get("leader") == s["node_id"]:
            led.add(key)
print(len(led), len(total))
PY
}
# Leaders per node and quiesced groups per node, from each node's own status.
leaders_by_node() { # NODES...
    for i in "$@"; do cli "$i" cluster status --json >"$OUT/status.$i.json" 2>/dev/null || true; done
    python3 - "$@" <<PY
import json, sys
out = []
for i in sys.argv[1:]:
    try:
        s = json.load(open("$OUT/status.%s.json" % i))
    except Exception:
        out.append(f"n{i}: ?"); continue
    lead = sum(1 for p in s.get("partitions", []) if p.get("leader") == s["node_id"])
    groups = s.get("groups", [])
    asleep = sum(1 for g in groups if g.get("asleep"))
    out.append(f"n{i}: leads {lead}, groups {len(groups)}, asleep {asleep}")
print("; ".join(out))
PY
}
wait_all_led() { # LABEL NODES... ; prints seconds waited
    local label=$1; shift
    local t0; t0=$(now)
    local until=$(( $(date +%s) + WAIT_SECONDS ))
    while :; do
        read -r l t <<<"$(led "$@")"
        echo "$label $(since "$t0") $l $t" >>"$OUT/progress.tsv"   # seconds, led, total: the curve
        if [ "$t" -ge "$PARTITIONS" ] && [ "$l" -ge "$PARTITIONS" ]; then since "$t0"; return 0; fi
        if [ "$(date +%s)" -ge "$until" ]; then log "$label: only $l of $PARTITIONS partitions have a leader after ${WAIT_SECONDS}s"; return 1; fi
        sleep 0.2
    done
}

# Wait for this shell's background jobs except the nodes.
wait_children() {
    local j
    for j in $(jobs -p); do
        case " ${PID[*]} " in *" $j "*) ;; *) wait "$j" 2>/dev/null || true ;; esac
    done
}

stat_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

produce_sample() { # NODE LABEL ; prints "ok/total max_ms"
    local node=$1 label=$2 ok=0 total=0 worst=0
    for ((s = 0; s < SAMPLE; s++)); do
        local g=$(( s * PARTITIONS / SAMPLE ))
        local topic_i=$(( g / PER_TOPIC_MAX )) part=$(( g % PER_TOPIC_MAX ))
        local t0; t0=$(now)
        total=$((total + 1))
        if echo "$label-$g" | cli "$node" produce "scale$topic_i" --partition "$part" >>"$OUT/produce.log" 2>&1; then ok=$((ok + 1)); fi
        local ms; ms=$(python3 -c "import sys; print(int((float(sys.argv[2]) - float(sys.argv[1])) * 1000))" "$t0" "$(now)")
        [ "$ms" -gt "$worst" ] && worst=$ms
    done
    echo "$ok/$total $worst"
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "uptime: $(uptime)"
    echo "filesystem: $(df -hT "$OUT" | awk 'NR==2 {print $2, $1}')"
    echo "weft: $WEFT (built $(date -u -r "$WEFT" +%Y-%m-%dT%H:%M:%SZ)); tree at $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet -- crates/weft-cluster || echo " (weft-cluster modified)")"
    echo "settings: PARTITIONS=$PARTITIONS REPLICAS=$REPLICAS IDLE_SECONDS=$IDLE_SECONDS SETTLE_SECONDS=$SETTLE_SECONDS KILL=$KILL topics=${TOPICS[*]} $(env | grep '^WEFT_CLUSTER_' | tr '\n' ' ')"
    echo "open-file limit: soft $(ulimit -Sn) hard $(ulimit -Hn)"
} | tee "$OUT/machine.txt" >&2

for i in 1 2 3; do start_node "$i"; done
for i in 1 2 3; do wait_tcp "$i"; done
log "nodes up: pids ${PID[1]} ${PID[2]} ${PID[3]}; results in $OUT"

# The metadata group needs a leader before a topic can be created.
for _ in $(seq 300); do
    cli 1 cluster status --json 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("meta_leader") else 1)' && break
    sleep 0.2
done

t_create=$(now)
for spec in "${TOPICS[@]}"; do
    name=${spec%%:*}; n=${spec##*:}
    cli 1 topic create "$name" --partitions "$n" --replicas "$REPLICAS" --timeout-ms 60000 >/dev/null \
        || { log "creating $name ($n partitions) failed"; exit 1; }
done
create_s=$(since "$t_create")
log "topics created in ${create_s}s; waiting for leaders"
led_s=$(wait_all_led "creation" 1 2 3) || exit 1
all_led_s=$(since "$t_create")
log "every partition has a leader ${all_led_s}s after the create call (leaders: $(leaders_by_node 1 2 3))"
check_deadline

before=$(produce_sample 1 before)
log "produce before the kill: $before (ok/total, slowest ms)"

log "settling ${SETTLE_SECONDS}s"
sleep "$SETTLE_SECONDS"
check_deadline
dist_before=$(leaders_by_node 1 2 3)
log "before the idle window: $dist_before"

CLK=$(getconf CLK_TCK)
declare -A T0 T1
for i in 1 2 3; do T0[$i]=$(stat_ticks "${PID[$i]}"); done
w0=$(now)
sleep "$IDLE_SECONDS"
for i in 1 2 3; do T1[$i]=$(stat_ticks "${PID[$i]}"); done
wall=$(since "$w0")
load=$(cut -d' ' -f1-3 /proc/loadavg)
dist_after=$(leaders_by_node 1 2 3)
[ "$dist_after" = "$dist_before" ] || log "leadership changed during the idle window: $dist_after"
declare -A CPU RSS HWM FDS THR
for i in 1 2 3; do
    CPU[$i]=$(python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3]) / float(sys.argv[4]) * 100:.2f}')" "${T0[$i]}" "${T1[$i]}" "$CLK" "$wall")
    RSS[$i]=$(( $(status_kb "${PID[$i]}" VmRSS) / 1024 ))
    HWM[$i]=$(( $(status_kb "${PID[$i]}" VmHWM) / 1024 ))
    FDS[$i]=$(ls "/proc/${PID[$i]}/fd" | wc -l)
    THR[$i]=$(status_kb "${PID[$i]}" Threads)
done

# kill -9 of one node; time until every partition has a leader on the survivors.
survivors=(); for i in 1 2 3; do [ "$i" = "$KILL" ] || survivors+=("$i"); done
t_kill=$(now)
kill -9 "${PID[$KILL]}"; wait "${PID[$KILL]}" 2>/dev/null || true; unset "PID[$KILL]"
recover_s=$(wait_all_led "after kill -9 of node $KILL" "${survivors[@]}") || recover_s="> ${WAIT_SECONDS} (not recovered)"
log "every partition has a leader on nodes ${survivors[*]} ${recover_s}s after kill -9 of node $KILL ($(leaders_by_node "${survivors[@]}"))"
after=$(produce_sample "${survivors[0]}" after)
log "produce after the recovery: $after"

{
    echo
    echo "### Cluster scale: $PARTITIONS partitions x $REPLICAS replicas on 3 nodes"
    echo
    sed 's/^/    /' "$OUT/machine.txt"
    echo
    echo "- topic create call: ${create_s} s; every partition led: ${all_led_s} s after the call"
    echo "- leaders before the idle window: $dist_before"
    echo "- idle window: ${wall} s, load average at its end: $load"
    echo
    echo "| node | idle CPU % of a core | RSS MB | peak RSS MB | open fds | threads |"
    echo "|---|---|---|---|---|---|"
    for i in 1 2 3; do echo "| $i | ${CPU[$i]} | ${RSS[$i]} | ${HWM[$i]} | ${FDS[$i]} | ${THR[$i]} |"; done
    echo
    echo "- kill -9 of node $KILL: every partition has a leader on the survivors after **${recover_s} s**"
    echo "- produce to $SAMPLE sample partitions (ok/total, slowest ms): before the kill $before; after the recovery $after"
} | tee "$OUT/report.md"
