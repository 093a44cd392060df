#!/usr/bin/env bash
# End-to-end test of the live page in a real browser: installs what a fresh
# machine lacks (Debian's chromium, redis-server, the test's npm package),
# builds the stack the test steers, then runs server/web/tests/browser.test.mjs.
# Screenshots land in artifacts/browser/.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi

tests=server/web/tests
if [ ! -d "$tests/node_modules/playwright-core" ]; then
  # The browser is Debian's: playwright-core downloads none.
  (cd "$tests" && npm ci --no-audit --no-fund)
fi

echo "== build the test stack"
cargo build -p crowd-loadgen --example browser_stack
stack="$(cargo build -p crowd-loadgen --example browser_stack --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*browser_stack"' | tail -n 1 | cut -d'"' -f4)"
[ -x "$stack" ] || { echo "browser_stack binary not found" >&2; exit 1; }

echo "== browser test"
mkdir -p artifacts/browser
ARTIFACTS_DIR="$PWD/artifacts/browser" node "$tests/browser.test.mjs" "$stack" \
  --cars-per-route B=8 --gtfs loadgen/sample-gtfs
