#!/usr/bin/env bash
# Debian's prometheus package, for the monitoring tests (tests/monitoring/): `promtool` checks
# and unit-tests the alert rules of deploy/monitoring/, and a real `prometheus` scrapes a
# running service.
#
# Installs only as root with apt-get; otherwise it says what to do and fails, and so will those
# tests (they never skip). PROMTOOL=/path/to/promtool and PROMETHEUS=/path/to/prometheus
# point at other binaries. The package's own service is not started: the tests run their own
# Prometheus on a free port.
set -euo pipefail

promtool="${PROMTOOL:-/usr/bin/promtool}"
prometheus="${PROMETHEUS:-/usr/bin/prometheus}"

found() { [ -x "$1" ] || command -v "$1" >/dev/null 2>&1; }

if found "$promtool" && found "$prometheus"; then
  echo "prometheus: $("$prometheus" --version 2>/dev/null | head -n 1 || echo "found") ($prometheus, $promtool)"
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "prometheus: installing Debian's package with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d in containers keeps the package's service from starting; elsewhere stop it, the
  # tests need none of it.
  apt-get install -y -qq prometheus
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
  fi
  echo "prometheus: $(/usr/bin/prometheus --version 2>/dev/null | head -n 1 || echo "installed")"
  exit 0
fi

echo "prometheus: promtool or prometheus not found ($promtool, $prometheus) and cannot be" >&2
echo "            installed here (needs root and apt-get). Install Debian's 'prometheus'" >&2
echo "            package (sudo apt-get install -y prometheus), or set PROMTOOL= and" >&2
echo "            PROMETHEUS= to the binaries. The monitoring tests fail until then." >&2
exit 1
