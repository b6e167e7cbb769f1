#!/usr/bin/env bash
# ceph-reef.sh setup|up|down - a throwaway Ceph 18 (Reef) cluster for the
# msgr2 compression test (Pacific, what Debian 12 ships, has no on-wire
# compression). Reef comes from Debian 13's packages, installed into a
# chroot so the host's Ceph 16 stays as it is; the daemons run in the
# chroot and share the host's loopback.
#
#   setup  debootstrap Debian 13 (trixie) into $WEFT_REEF_ROOT and install
#          ceph-mon, ceph-osd, ceph-common there (a few minutes, ~600 MB;
#          needs the debootstrap package and Debian's mirror)
#   up     start 1 mon + 1 memstore OSD with ../shared/scripts/ceph/ceph-up.sh
#          inside the chroot (CEPH_DIR /tmp/weft-ceph-reef there, monitor on
#          3360/6860), force compression on the OSD (ms_osd_compress_mode
#          force, algorithms snappy lz4 zstd, osd_client_message_size_cap
#          0: see below); prints KEY=VALUE lines with
#          host paths: CEPH_CONF CEPH_KEYRING CEPH_MON_HOST REEF_ROOT
#          CEPH_OSD_KEYRING CEPH_DIR
#   down   stop the daemons (pid files), wipe, unmount /proc and /dev
# env: WEFT_REEF_ROOT (/var/lib/weft-reef), WEFT_SHARED (<repo>/../shared)
set -euo pipefail

ROOT=${WEFT_REEF_ROOT:-/var/lib/weft-reef}
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${WEFT_SHARED:-$HERE/../../shared}
IN_DIR=/tmp/weft-ceph-reef
V2=3360
V1=6860

log() { echo "[ceph-reef $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
inroot() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }

mounts() {
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
}
unmounts() {
  mountpoint -q "$ROOT/dev" && umount "$ROOT/dev" || true
  mountpoint -q "$ROOT/proc" && umount "$ROOT/proc" || true
}

case ${1:-up} in
setup)
  command -v debootstrap >/dev/null || apt-get install -y --no-install-recommends debootstrap >&2
  if [[ ! -x $ROOT/usr/bin/apt-get ]]; then
    # minbase only; systemd (pulled in by ceph's dependencies) fails to
    # unpack during debootstrap and is fixed by apt below
    debootstrap --variant=minbase trixie "$ROOT" http://deb.debian.org/debian >&2 || log "debootstrap reported errors; repairing with apt"
  fi
  mounts
  inroot bash -c 'export DEBIAN_FRONTEND=noninteractive; dpkg --configure -a; apt-get -f install -y; apt-get install -y --no-install-recommends ceph-mon ceph-osd ceph-common bc' >&2
  unmounts
  inroot ceph --version
  ;;
up)
  [[ -x $ROOT/usr/bin/ceph-osd ]] || die "no Reef in $ROOT: run $0 setup"
  [[ -f $SHARED/scripts/ceph/ceph-up.sh ]] || die "no $SHARED/scripts/ceph/ceph-up.sh"
  mounts
  mkdir -p "$ROOT/opt/weft"
  cp "$SHARED/scripts/ceph/ceph-up.sh" "$SHARED/scripts/ceph/ceph-down.sh" "$ROOT/opt/weft/"
  out=$(inroot env CEPH_DIR=$IN_DIR MON_V2_PORT=$V2 MON_V1_PORT=$V1 bash /opt/weft/ceph-up.sh)
  conf=$IN_DIR/ceph.conf
  inroot timeout 60 ceph -c $conf config set osd ms_osd_compress_mode force >&2
  inroot timeout 60 ceph -c $conf config set osd ms_osd_compression_algorithm "snappy lz4 zstd" >&2
  # Reef 18.2.7 takes a message's bytes from its byte throttle by the
  # compressed size and gives back the decompressed size: a compressed
  # message on a throttled connection aborts the OSD (Throttle::put
  # assert). 0 turns that throttle off, so compressed writes can be tested.
  inroot timeout 60 ceph -c $conf config set osd osd_client_message_size_cap 0 >&2
  log "$(inroot ceph --version) up; OSD compression forced"
  echo "$out" | grep -E '^(CEPH_MON_HOST|CEPH_POOL|CEPH_FSID)='
  cat <<EOF
CEPH_CONF=$ROOT$conf
CEPH_KEYRING=$ROOT$IN_DIR/ceph.client.admin.keyring
CEPH_OSD_KEYRING=$ROOT$IN_DIR/osd/ceph-0/keyring
CEPH_DIR=$ROOT$IN_DIR
REEF_ROOT=$ROOT
EOF
  ;;
down)
  if [[ -x $ROOT/usr/bin/ceph-osd && -f $ROOT/opt/weft/ceph-down.sh ]]; then
    mounts
    inroot env CEPH_DIR=$IN_DIR bash /opt/weft/ceph-down.sh --wipe >&2 || true
  fi
  unmounts
  ;;
*) die "usage: $0 setup|up|down" ;;
esac
