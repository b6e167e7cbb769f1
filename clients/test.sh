#!/usr/bin/env bash
# The Python and JavaScript clients, end to end, on a fresh machine: type
# checks, test suites against a real `weft serve`, the built artefacts (wheel,
# npm tarball) installed into a clean venv / folder. Exits non-zero on any failure.
#
#   WEFT_BIN       the weft binary (default: build target/debug/weft)
#   WEFT_EXAMPLES  folder with the Rust dice_server and echo_server examples
#                  (default: build them when cargo is there)
#   WEFT_PYTHON    the venv's python (default: <repo>/.venv/bin/python; created if absent)
set -euo pipefail

CLIENTS=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$CLIENTS/.." && pwd)

if [[ -z "${WEFT_BIN:-}" ]]; then
    echo "== cargo build -p weft"
    (cd "$ROOT" && cargo build -q -p weft)
    WEFT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/weft"
fi
[[ -x "$WEFT_BIN" ]] || { echo "no weft binary at $WEFT_BIN" >&2; exit 1; }
export WEFT_BIN

# The Rust dice and echo examples, for the "Python and Rust services are
# interchangeable" tests (skipped, and said so, without them).
if [[ -z "${WEFT_EXAMPLES:-}" ]] && command -v cargo >/dev/null; then
    echo "== cargo build -p weft-service --example dice_server --example echo_server"
    (cd "$ROOT" && cargo build -q -p weft-service --example dice_server --example echo_server)
    export WEFT_EXAMPLES="${CARGO_TARGET_DIR:-$ROOT/target}/debug/examples"
fi

WEFT_PYTHON=${WEFT_PYTHON:-$ROOT/.venv/bin/python}
if [[ ! -x "$WEFT_PYTHON" ]]; then
    echo "== python3 -m venv $(dirname "$(dirname "$WEFT_PYTHON")")"
    python3 -m venv "$(dirname "$(dirname "$WEFT_PYTHON")")"
fi
export WEFT_PYTHON

echo "== python: pip install (pytest, pytest-asyncio, mypy, build, msgpack, zstandard)"
"$WEFT_PYTHON" -m pip install -q --disable-pip-version-check pytest pytest-asyncio mypy build msgpack zstandard

cd "$CLIENTS/python"
echo "== python: mypy --strict"
"$WEFT_PYTHON" -m mypy --strict src/weft examples
echo "== python: pytest (includes python -m build and the clean-venv install)"
"$WEFT_PYTHON" -m pytest -q -p no:cacheprovider tests

cd "$CLIENTS/js"
echo "== js: npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "== js: tsc"
npm run -s build
echo "== js: node --test (includes npm pack and the clean-folder install)"
ws_flag=()
if [[ $(node -e 'process.stdout.write(typeof WebSocket)') == undefined ]]; then
    ws_flag=(--experimental-websocket)   # Node 20: WebSocket for the HTTP gateway's streams
fi
node --test "${ws_flag[@]}" test/
echo "== clients: all passed"
