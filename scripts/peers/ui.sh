#!/usr/bin/env bash
# Peers of the dashboard tests (crates/weft/tests/dashboard.rs, WEFT_PEERS=1):
# Debian's chromium and chromium-driver, and web/node_modules (playwright-core,
# vite, React, ...) from the committed web/package-lock.json. Idempotent.
# Playwright never downloads a browser here: the test launches /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "[peers/ui] need root and apt-get to install chromium" >&2
    exit 1
  fi
  [ -f /tmp/.weft-apt-updated ] || { apt-get update -qq && touch /tmp/.weft-apt-updated; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
  echo "[peers/ui] installed chromium"
else
  echo "[peers/ui] chromium present"
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "[peers/ui] need node and npm" >&2
  exit 1
fi
# npm ci only when the lock file changed since the last install.
stamp=web/node_modules/.weft-lock-sha
want=$(sha256sum web/package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[peers/ui] web/node_modules up to date"
else
  (cd web && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
  echo "[peers/ui] npm ci in web/"
fi
