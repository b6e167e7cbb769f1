#!/usr/bin/env bash
# Peers of the gRPC query API test (crates/weft/tests/query_grpc.rs,
# WEFT_PEERS=1): Python grpcio, grpcio-tools (stub generation from proto/),
# grpcio-health-checking, grpcio-reflection and grpcio-status (google.rpc details), pip-installed into the repo
# venv ($WEFT_PYTHON's, default <repo>/.venv). Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${WEFT_PYTHON:-$ROOT/.venv/bin/python}"
if [ ! -x "$PY" ]; then
    python3 -m venv "$(dirname "$(dirname "$PY")")"
fi
if "$PY" -c 'import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2_grpc, grpc_reflection.v1alpha.reflection_pb2_grpc, grpc_status.rpc_status' 2>/dev/null; then
    echo "[peers/grpc] grpcio, grpcio-tools, grpcio-health-checking, grpcio-reflection, grpcio-status present"
    exit 0
fi
"$PY" -m pip install -q grpcio grpcio-tools grpcio-health-checking grpcio-reflection grpcio-status
echo "[peers/grpc] installed grpcio, grpcio-tools, grpcio-health-checking, grpcio-reflection, grpcio-status"
