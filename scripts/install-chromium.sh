#!/usr/bin/env bash
# Debian's chromium, for the explorer page's browser test (tests/app/test_explorer_page.py).
#
# Playwright drives it (`executable_path`); Playwright's own browser download needs a CDN this
# project cannot count on, Debian's package comes from the distribution mirror. Installs only
# as root with apt-get; otherwise it says what to do and fails, and so will the browser test
# (it never skips). CHROMIUM=/path/to/chromium points at another binary.
set -euo pipefail

chromium="${CHROMIUM:-/usr/bin/chromium}"

if [ -x "$chromium" ] || command -v "$chromium" >/dev/null 2>&1; then
  echo "chromium: $("$chromium" --version 2>/dev/null || echo "found") ($chromium)"
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium: installing Debian's package with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium
  echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo "installed")"
  exit 0
fi

echo "chromium: not found at $chromium and cannot be installed here (needs root and apt-get)." >&2
echo "          Install Debian's 'chromium' package (sudo apt-get install -y chromium)," >&2
echo "          or set CHROMIUM=/path/to/chromium. The explorer page test fails until then." >&2
exit 1
