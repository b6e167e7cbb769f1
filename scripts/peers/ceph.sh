#!/usr/bin/env bash
# scripts/peers/ceph.sh - idempotently install what the weft-rados live tests
# need: a Ceph 16 (Debian 12 "pacific") mon + OSD (+ mgr, for df/status) and the client tools
# (ceph, rados, crushtool, osdmaptool, monmaptool, ceph-authtool).
# The cluster itself is started by the tests via ../shared/scripts/ceph/ceph-up.sh.
set -euo pipefail

need=(ceph ceph-mon ceph-osd ceph-mgr ceph-authtool monmaptool rados crushtool osdmaptool)
missing=()
for b in "${need[@]}"; do
  command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "[peers/ceph] already installed: $(ceph --version 2>/dev/null | head -1)" >&2
  exit 0
fi
echo "[peers/ceph] missing: ${missing[*]}; installing ceph-mon ceph-osd ceph-mgr ceph-common" >&2
SUDO=
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends ceph-mon ceph-osd ceph-mgr ceph-common >/dev/null
for b in "${need[@]}"; do
  command -v "$b" >/dev/null 2>&1 || { echo "[peers/ceph] $b still missing after install" >&2; exit 1; }
done
echo "[peers/ceph] installed: $(ceph --version | head -1)" >&2
