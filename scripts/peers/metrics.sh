#!/usr/bin/env bash
# Peers of the metrics test (crates/weft/tests/metrics.rs, WEFT_PEERS=1):
# Prometheus and promtool from Debian's `prometheus` package. Idempotent.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  echo "[peers/metrics] prometheus and promtool present"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "[peers/metrics] need root and apt-get to install prometheus" >&2
  exit 1
fi
[ -f /tmp/.weft-apt-updated ] || { apt-get update -qq && touch /tmp/.weft-apt-updated; }
# --no-install-recommends: the package only; Debian would also pull node-exporter and friends.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package starts its own daemon on :9090 where systemd runs; tests start their own.
echo "[peers/metrics] installed prometheus"
