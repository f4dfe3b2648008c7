#!/usr/bin/env bash
# Screenshots of the built site in headless Chromium (Debian's `chromium` package), for docs/screenshots/.
# Usage: make docs && docs/_site/screenshots.sh
set -euo pipefail
root=$(git rev-parse --show-toplevel)
port=8765
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$root/outputs/site" >/dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
sleep 1
profile=$(mktemp -d)
for page in home:"" deployment:deployments/flux-lora-txt2img/ charts:charts/; do
  # No background networking: this machine's closed network refuses Chromium's own connections.
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
    --window-size=1280,1400 --screenshot="$root/docs/screenshots/${page%%:*}.png" "http://127.0.0.1:$port/${page#*:}"
done
