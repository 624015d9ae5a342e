#!/usr/bin/env bash
# The browser check of issue 19's WebSocket bridge: runs examples/live_page on a loopback
# port, loads its page in headless Chromium, checks that the DOM shows publications
# received over the WebSocket, and saves a screenshot of it.
#
#   bash scripts/live_page_check.sh
#
# Needs Debian's `chromium`: installed with apt-get if missing (as root), or skipped with the
# reason printed (exit 0) where it cannot be. Writes $OUT/dom.html and $OUT/live_page.png,
# OUT being ${CARGO_TARGET_DIR:-target}/live_page.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
out="$target_dir/live_page"
mkdir -p "$out"

skip() {
  echo "live page check: SKIPPED: $*"
  exit 0
}

# Chromium, from Debian's package.
chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  command -v apt-get >/dev/null || skip "no chromium, and no apt-get to install it"
  [ "$(id -u)" = 0 ] || skip "no chromium, and not root to install it"
  echo "== installing chromium (apt-get)"
  start=$(date +%s)
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get update -qq >"$out/apt.log" 2>&1 ||
    ! apt-get install -y -qq --no-install-recommends chromium >>"$out/apt.log" 2>&1; then
    tail -5 "$out/apt.log" || true
    skip "apt-get could not install chromium (log in $out/apt.log)"
  fi
  echo "chromium installed in $(($(date +%s) - start)) s"
  chromium=$(command -v chromium) || skip "chromium installed but not on PATH"
fi
echo "== $("$chromium" --version 2>/dev/null | head -1)"
command -v python3 >/dev/null || skip "no python3 to drive chromium over the DevTools protocol"

echo "== building examples/live_page"
cargo build -p msg-examples --example live_page --locked
example="$target_dir/debug/examples/live_page"

# The example on a loopback port of the system's choosing; it prints the address.
log="$out/live_page.log"
"$example" 127.0.0.1:0 >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
url=
for _ in $(seq 100); do
  url=$(sed -n 's|^live page on \(http://[^ ]*\)$|\1|p' "$log")
  [ -n "$url" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "live page check: the example exited"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$log"; echo "live page check: the example printed no address in 10 s"; exit 1; }
echo "== page at $url"

# Headless, with a throwaway profile, driven over the DevTools protocol on a pipe: the page
# is loaded, and once it lists 3 publications (in real time, bounded by 30 s) its DOM and a
# screenshot are saved. (`--dump-dom --virtual-time-budget` cannot wait for WebSocket
# messages: see scripts/cdp_capture.py.)
if ! python3 scripts/cdp_capture.py "$chromium" "$url" "li.message" 3 \
  "$out/dom.html" "$out/live_page.png" 30; then
  echo "live page check: FAILED: the page did not list 3 publications in 30 s ($out/dom.html)"
  exit 1
fi
received=$(sed -n 's/.*data-received="\([0-9]*\)".*/\1/p' "$out/dom.html" | head -1)
if ! grep -q 'class="connected">connected<' "$out/dom.html" ||
  ! grep -q 'class="topic">ticks\.' "$out/dom.html" || [ "${received:-0}" -lt 3 ]; then
  echo "live page check: FAILED: the DOM does not show the publications ($out/dom.html)"
  exit 1
fi
[ -s "$out/live_page.png" ] || { echo "live page check: FAILED: no screenshot"; exit 1; }
echo "live page check: passed: the page shows $received publications received over the WebSocket; screenshot $out/live_page.png"
