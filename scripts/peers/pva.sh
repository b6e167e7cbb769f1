#!/usr/bin/env bash
# Install the pvAccess test peers into the shared venv (idempotent):
#   p4p 4.3.0  (pvxs 1.5.3, client + server)
#   pvapy 5.6.0 (pvAccessCPP 7.1.8 + pvDatabaseCPP 4.7.2, client + server)
#   redis-server (Debian) for the stateless-mode test
# Used by weft-pva's real-peer tests (WEFT_PEERS=1); they find python through
# WEFT_PYTHON (default <repo>/.venv/bin/python) and the peer servers in
# $WEFT_SHARED/scripts/pva (default ../shared/scripts/pva). Works as root on a
# fresh Debian machine.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${WEFT_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        [ -f /tmp/.weft-apt-updated ] || { apt-get update -qq && touch /tmp/.weft-apt-updated; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
    else
        echo "pva.sh: python3 with venv/ensurepip is required" >&2
        exit 1
    fi
fi
# Redis for weft-pva's stateless-mode test (started by the test on loopback).
if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        [ -f /tmp/.weft-apt-updated ] || { apt-get update -qq && touch /tmp/.weft-apt-updated; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "pva.sh: redis-server is required" >&2
        exit 1
    fi
fi
if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
fi
want() {
    "$PY" -c 'import importlib.metadata as m, sys; sys.exit(0 if m.version(sys.argv[1]) == sys.argv[2] else 1)' "$1" "$2" 2>/dev/null
}
if want p4p 4.3.0 && want pvapy 5.6.0 && "$PY" -c 'import p4p, pvaccess, numpy' 2>/dev/null; then
    echo "p4p 4.3.0 and pvapy 5.6.0 already installed in $VENV"
    exit 0
fi
"$PY" -m pip install --quiet 'p4p==4.3.0' 'pvapy==5.6.0'
"$PY" -c 'import p4p, pvaccess; import importlib.metadata as m; print("p4p", m.version("p4p"), "pvapy", m.version("pvapy"), "installed in", "'"$VENV"'")'
