#!/usr/bin/env bash
# Real peers for the TLS and QUIC tests of weft-net (WEFT_PEERS=1):
# Python's ssl module (stdlib, OpenSSL underneath), aioquic (a QUIC stack
# in Python, nobody here wrote it) in the shared venv, and the openssl CLI.
# Idempotent. The tests find python through WEFT_PYTHON (default
# /work/main/.venv/bin/python).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${WEFT_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
if ! command -v openssl >/dev/null; then
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssl >/dev/null
fi
if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
fi
if "$PY" -c 'import aioquic' 2>/dev/null; then
    echo "aioquic already installed in $VENV"
    exit 0
fi
"$PY" -m pip install --quiet 'aioquic==1.2.0'
"$PY" -c 'import aioquic; print("aioquic", aioquic.__version__, "installed in", "'"$VENV"'")'
