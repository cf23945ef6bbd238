#!/usr/bin/env bash
# The pictures in docs/ (make screenshots): the streamflow report's first screen
# (docs/report.png) and its live dashboard (docs/dashboard.png). Runs the demo first where it
# has not run (about a minute). Needs chromium (apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
SHOAL=${SHOAL:-.venv/bin/shoal}
BROWSER=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$BROWSER" ]; then
    echo "screenshots: chromium not found (apt-get install chromium)" >&2
    exit 1
fi
shoot() {  # URL PNG HEIGHT
    "$BROWSER" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
        --user-data-dir="$profile" --window-size=1200,"$3" --virtual-time-budget=6000 \
        --screenshot="$PWD/$2" "$1" 2>/dev/null
    echo "screenshots: wrote $2"
}
"$SHOAL" run examples/streamflow --progress none
page=$(mktemp --suffix=.html)
profile=$(mktemp -d)
log=$(mktemp)
server=
trap 'rm -rf "$page" "$profile" "$log"; [ -z "$server" ] || kill "$server" 2>/dev/null || true' EXIT
"$SHOAL" report examples/streamflow -o "$page"
shoot "file://$page" docs/report.png 1300
# the dashboard during a run: a fresh root with more seeds, shot while it trains
live=$(mktemp -d)
trap 'rm -rf "$page" "$profile" "$log" "$live"; [ -z "$server" ] || kill "$server" 2>/dev/null || true; [ -z "${runner:-}" ] || kill "$runner" 2>/dev/null || true' EXIT
"$SHOAL" run examples/streamflow --root "$live" --config seeds=6 --progress none &
runner=$!
"$SHOAL" serve examples/streamflow --root "$live" --config seeds=6 --port 0 2>"$log" &
server=$!
for _ in $(seq 100); do grep -q "token=" "$log" && break; sleep 0.1; done
url=$(grep -o "http://127.0.0.1:[0-9]*/?token=[A-Za-z0-9_-]*" "$log")
sleep "${SHOT_AFTER:-40}"  # (some evaluations done: the headline has numbers)
shoot "$url" docs/dashboard.png 1300
kill -INT "$runner" 2>/dev/null || true
wait "$runner" 2>/dev/null || true
runner=
