#!/usr/bin/env bash
# Peers of the streaming-log benchmark test (crates/weft-logbench, WEFT_PEERS=1):
# NATS JetStream and Redis from Debian. Idempotent.
set -euo pipefail
missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then
  echo "[peers/log] nats-server and redis-server present"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "[peers/log] need root and apt-get to install: ${missing[*]}" >&2
  exit 1
fi
[ -f /tmp/.weft-apt-updated ] || { apt-get update -qq && touch /tmp/.weft-apt-updated; }
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
echo "[peers/log] installed ${missing[*]}"
