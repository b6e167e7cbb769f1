#!/usr/bin/env bash
# Tools the CLI tests of the weft binary run (crates/weft/tests/readme.rs,
# commands.rs, cli_options.rs): curl (the README's HTTP gateway example)
# and bash (`bash -n` on the generated completion). Idempotent.
set -euo pipefail
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v bash >/dev/null || missing+=(bash)
if [ ${#missing[@]} -eq 0 ]; then
    echo "curl and bash present"
    exit 0
fi
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed ${missing[*]}"
