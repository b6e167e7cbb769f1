#!/usr/bin/env bash
# Install the ekosis 0.17.0 test peer into the shared venv (idempotent).
# Used by weft-ekosis's real-peer tests (WEFT_PEERS=1); the tests find python
# through WEFT_PYTHON (default /work/main/.venv/bin/python).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${WEFT_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
fi
if "$PY" -c 'import importlib.metadata as m, sys; sys.exit(0 if m.version("ekosis") == "0.17.0" else 1)' 2>/dev/null; then
    echo "ekosis 0.17.0 already installed in $VENV"
    exit 0
fi
"$PY" -m pip install --quiet 'ekosis==0.17.0'
"$PY" -c 'import importlib.metadata as m; print("ekosis", m.version("ekosis"), "installed in", "'"$VENV"'")'
