#!/usr/bin/env bash
# The whole check: lint, types, the firmware's host build and unit tests, then pytest.
set -o errexit -o nounset -o pipefail
cd "$(dirname "$0")/.."

echo "== ruff"
.venv/bin/ruff check .
echo "== import contracts"
.venv/bin/lint-imports
echo "== mypy"
.venv/bin/mypy
if [ -x firmware/esp32/build_host.sh ]; then
  echo "== firmware host build + ctest"
  firmware/esp32/build_host.sh
fi
echo "== pytest"
.venv/bin/python -m pytest "$@"
