#!/usr/bin/env bash
# ceph-multi.sh up|down - a throwaway Ceph 16 cluster with three monitors
# (a, b, c) and three memstore OSDs, all on 127.0.0.1, for the tests that
# need more than the single-daemon cluster of ../shared/scripts/ceph:
# monitor failover (kill or stop the monitor a client talks to; two of
# three keep quorum) and placement with several OSDs (primary affinity,
# pg_temp, primary_temp) checked against the monitor and osdmaptool.
#
# Own directory and ports, so it runs beside the default test cluster.
#   up    start (wiping any leftover of ours first); prints KEY=VALUE lines:
#         CEPH_CONF CEPH_KEYRING CEPH_MON_HOST CEPH_MON_PORTS CEPH_DIR
#   down  stop the daemons we started (pid files whose command line names
#         our conf) and wipe the directory
# env: CEPH_DIR (/tmp/weft-ceph-multi), MON_PORT_BASE (3320: mons on
#      3320-3322, msgr2 only), OSDS (3)
set -euo pipefail

CEPH_DIR=${CEPH_DIR:-/tmp/weft-ceph-multi}
MON_PORT_BASE=${MON_PORT_BASE:-3320}
OSDS=${OSDS:-3}
IP=127.0.0.1
CONF=$CEPH_DIR/ceph.conf
KEYRING=$CEPH_DIR/ceph.client.admin.keyring
MONS=(a b c)

log() { echo "[ceph-multi $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
cephc() { timeout 60 ceph -c "$CONF" --connect-timeout 30 "$@"; }

# pid file -> pid, only if alive and its command line names our conf
ours() {
  local f=$1 pid
  [[ -s $f ]] || return 1
  pid=$(cat "$f")
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CONF" || return 1
  echo "$pid"
}

down() {
  [[ -d $CEPH_DIR/run ]] || { rm -rf "$CEPH_DIR"; return 0; }
  local pids=() pid f
  for f in "$CEPH_DIR"/run/*.pid; do
    [[ -e $f ]] || continue
    if pid=$(ours "$f"); then
      # a test may have stopped it (SIGSTOP): resume so TERM is handled
      kill -CONT "$pid" 2>/dev/null || true
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null; done
  rm -rf "$CEPH_DIR"
}

case ${1:-up} in
down) down; exit 0 ;;
up) ;;
*) die "usage: $0 up|down" ;;
esac

for b in ceph ceph-mon ceph-osd ceph-authtool monmaptool; do
  command -v "$b" >/dev/null || die "$b missing: apt-get install -y --no-install-recommends ceph-mon ceph-osd ceph-common"
done
down
for i in 0 1 2; do
  if (exec 3<>"/dev/tcp/$IP/$((MON_PORT_BASE + i))") 2>/dev/null; then
    die "port $((MON_PORT_BASE + i)) is used by a process this script does not own"
  fi
done
mkdir -p "$CEPH_DIR"/{run,log,mon,osd,crash}
FSID=$(cat /proc/sys/kernel/random/uuid)
MON_HOST=""
for i in 0 1 2; do MON_HOST+="${MON_HOST:+,}[v2:$IP:$((MON_PORT_BASE + i))]"; done

cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon_initial_members = a, b, c
mon_host = $MON_HOST
public_addr = $IP
cluster_addr = $IP
ms_bind_ipv4 = true
ms_bind_ipv6 = false
ms_bind_msgr2 = true
ms_bind_msgr1 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
run_dir = $CEPH_DIR/run
log_file = $CEPH_DIR/log/\$cluster-\$name.log
crash_dir = $CEPH_DIR/crash
osd_pool_default_size = 2
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 16
osd_pool_default_pgp_num = 16
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
mon_osd_allow_primary_temp = true
mon_osd_allow_pg_upmap = true

[mon]
mon_data = $CEPH_DIR/mon/\$cluster-\$id
admin_socket = $CEPH_DIR/run/\$cluster-\$name.asok
pid_file = $CEPH_DIR/run/\$name.pid
mon_data_avail_warn = 1
mon_data_avail_crit = 0
EOF
for i in 0 1 2; do
  printf '[mon.%s]\npublic_addrv = [v2:%s:%s]\n' "${MONS[$i]}" "$IP" "$((MON_PORT_BASE + i))" >>"$CONF"
done
cat >>"$CONF" <<EOF

[osd]
osd_data = $CEPH_DIR/osd/\$cluster-\$id
keyring = $CEPH_DIR/osd/\$cluster-\$id/keyring
admin_socket = $CEPH_DIR/run/\$cluster-\$name.asok
pid_file = $CEPH_DIR/run/\$name.pid
osd_objectstore = memstore
memstore_device_bytes = 1073741824
osd_memory_target = 536870912
osd_crush_initial_weight = 1
osd_crush_update_on_start = true

[client]
keyring = $KEYRING
EOF

ceph-authtool "$CEPH_DIR/mon.keyring" --create-keyring --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$KEYRING" --create-keyring --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$CEPH_DIR/mon.keyring" --import-keyring "$KEYRING" >/dev/null
chmod 600 "$CEPH_DIR/mon.keyring" "$KEYRING"

args=()
for i in 0 1 2; do args+=(--addv "${MONS[$i]}" "[v2:$IP:$((MON_PORT_BASE + i))]"); done
monmaptool --create --fsid "$FSID" "${args[@]}" "$CEPH_DIR/monmap" >/dev/null
for m in "${MONS[@]}"; do
  ceph-mon -c "$CONF" -i "$m" --mkfs --monmap "$CEPH_DIR/monmap" --keyring "$CEPH_DIR/mon.keyring"
  ceph-mon -c "$CONF" -i "$m" # daemonizes; pid in run/mon.$m.pid
done
for _ in $(seq 120); do
  q=$(cephc quorum_status -f json 2>/dev/null | grep -o '"quorum_names":\[[^]]*\]' || true)
  [[ $q == *'"a"'*'"b"'*'"c"'* ]] && break
  sleep 0.5
done
[[ ${q:-} == *'"a"'*'"b"'*'"c"'* ]] || die "monitors formed no quorum of three (see $CEPH_DIR/log)"
log "3 monitors in quorum"

for id in $(seq 0 $((OSDS - 1))); do
  uuid=$(cat /proc/sys/kernel/random/uuid)
  secret=$(ceph-authtool --gen-print-key)
  printf '{"cephx_secret": "%s"}\n' "$secret" >"$CEPH_DIR/osd-new.json"
  got=$(cephc osd new "$uuid" -i "$CEPH_DIR/osd-new.json")
  [[ $got == "$id" ]] || die "unexpected osd id '$got' (wanted $id)"
  mkdir -p "$CEPH_DIR/osd/ceph-$id"
  ceph-authtool "$CEPH_DIR/osd/ceph-$id/keyring" --create-keyring --name "osd.$id" --add-key "$secret" >/dev/null
  ceph-osd -c "$CONF" -i "$id" --mkfs --osd-uuid "$uuid" >"$CEPH_DIR/log/osd-mkfs.$id.log" 2>&1 ||
    die "osd.$id mkfs failed: $(tail -5 "$CEPH_DIR/log/osd-mkfs.$id.log")"
  ceph-osd -c "$CONF" -i "$id" 2>>"$CEPH_DIR/log/osd-start.log"
done
for _ in $(seq 180); do
  [[ $(cephc osd dump 2>/dev/null | grep -c "^osd\.[0-9]* up") == "$OSDS" ]] && break
  sleep 0.5
done
[[ $(cephc osd dump | grep -c "^osd\.[0-9]* up") == "$OSDS" ]] || die "not all $OSDS OSDs came up (see $CEPH_DIR/log)"
log "$OSDS OSDs up"

# memstore (16.2.15) lets its used-bytes counter wrap below zero after
# deletes and then reports itself full; a permanent object on every OSD
# keeps it positive (see ../shared/scripts/ceph/README.md)
cephc osd pool create ballast 1 1 replicated >/dev/null 2>&1
cephc osd pool set ballast size "$OSDS" --yes-i-really-mean-it >/dev/null 2>&1
cephc osd pool application enable ballast rados >/dev/null 2>&1
ok=
for _ in $(seq 60); do
  if head -c 1048576 /dev/zero | timeout 10 rados -c "$CONF" -p ballast put ballast - 2>/dev/null; then ok=1; break; fi
  sleep 0.5
done
[[ -n $ok ]] || die "the cluster does not serve I/O"
log "cluster serving I/O"

cat <<EOF
CEPH_CONF=$CONF
CEPH_KEYRING=$KEYRING
CEPH_MON_HOST=$MON_HOST
CEPH_MON_PORTS=$MON_PORT_BASE,$((MON_PORT_BASE + 1)),$((MON_PORT_BASE + 2))
CEPH_DIR=$CEPH_DIR
EOF
