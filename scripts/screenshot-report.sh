#!/usr/bin/env bash
# The streamflow report's first screen as docs/report.png (make screenshots). Runs the demo
# first where it has not run (about a minute), writes the report, and has headless Chromium
# take the picture. Needs chromium (apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
SHOAL=${SHOAL:-.venv/bin/shoal}
BROWSER=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$BROWSER" ]; then
    echo "screenshot-report: chromium not found (apt-get install chromium)" >&2
    exit 1
fi
"$SHOAL" run examples/streamflow --progress none
page=$(mktemp --suffix=.html)
profile=$(mktemp -d)
trap 'rm -rf "$page" "$profile"' EXIT
"$SHOAL" report examples/streamflow -o "$page"
"$BROWSER" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --user-data-dir="$profile" --window-size=1200,1300 --virtual-time-budget=5000 \
    --screenshot="$PWD/docs/report.png" "file://$page" 2>/dev/null
echo "screenshot-report: wrote docs/report.png"
