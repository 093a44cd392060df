#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit, property, end-to-end and fault
# tests, each starting its own redis-server on a random port) and the live
# page in headless Chromium. Installs redis-server when missing (as root on
# Debian/Ubuntu); the browser test installs Chromium and playwright-core.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools
  else
    echo "redis-server or redis-cli is missing: install them (Debian/Ubuntu: sudo apt-get install redis-server redis-tools; macOS: brew install redis)" >&2
    exit 1
  fi
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "== cargo test --workspace"
cargo test --workspace 2>&1 | tee "$log"

echo "== live page in a real browser"
scripts/browser-test.sh

read -r passed failed < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$log")
echo "summary: $((passed + 1)) passed, $failed failed"
