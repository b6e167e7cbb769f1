#!/usr/bin/env bash
# Peer of the traces test (crates/weft/tests/traces.rs, WEFT_PEERS=1): the
# official OTLP protobuf definitions (`opentelemetry-proto`) and the
# OpenTelemetry Python SDK (a traced client) in the shared venv. Idempotent.
# The tests find python through WEFT_PYTHON (default .venv/bin/python).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${WEFT_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
fi
# msgpack: the traces test also runs the Python client (clients/python) from source.
if "$PY" -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2, opentelemetry.sdk.trace, msgpack' 2>/dev/null; then
    echo "[peers/otel] opentelemetry-proto, opentelemetry-sdk and msgpack present in $VENV"
    exit 0
fi
"$PY" -m pip install --quiet opentelemetry-proto opentelemetry-sdk msgpack
"$PY" -c 'import importlib.metadata as m; print("[peers/otel] opentelemetry-proto", m.version("opentelemetry-proto"), "opentelemetry-sdk", m.version("opentelemetry-sdk"), "installed")'
