#!/usr/bin/env bash
# Make this checkout runnable on a fresh Debian/Ubuntu/Raspberry Pi OS machine: the system
# packages the demo and the tests need, then a venv in .venv with the project installed.
# Idempotent and quick when everything is already there.
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: Python >= 3.11 is required (found: $("$PY" --version 2>&1))" >&2
  exit 1
fi

# mosquitto: the broker; postgresql: initdb/pg_ctl for the private cloud database;
# libmosquitto-dev, cmake, g++: the firmware's host build; chromium(-driver): UI tests.
APT_PACKAGES=(mosquitto mosquitto-clients postgresql libmosquitto-dev cmake g++ python3-venv
              chromium chromium-driver)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

EXTRAS=${SMAINT_EXTRAS:-edge,cloud,ui,dev}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.smaint-installed"
want="$(cat pyproject.toml simulator/pyproject.toml | sha256sum | cut -d' ' -f1) $EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing the project into .venv ($EXTRAS), a few minutes the first time"
  # The simulator (with its replay data) is a distribution of its own: the demo, the tests
  # and the benchmarks use it; a gateway's `.[edge]` install never carries it.
  .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]" -e ./simulator
  echo "$want" > "$stamp"
fi
