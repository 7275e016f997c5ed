#!/usr/bin/env bash
# Host build of the ESP32 firmware: configure, build and run the core's unit tests (ctest).
#   firmware/esp32/build_host.sh [--no-test] [--sanitize]
# Output in firmware/esp32/build-host/ (build-host-asan/ with --sanitize);
# the binary is build-host/virtual-esp32.
set -o errexit -o nounset -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$here/build-host"
run_tests=1
cmake_args=()
for arg in "$@"; do
  case "$arg" in
    --no-test) run_tests=0 ;;
    --sanitize) build="$here/build-host-asan"; cmake_args+=(-DSMAINT_SANITIZE=ON) ;;
    *) echo "usage: $0 [--no-test] [--sanitize]" >&2; exit 2 ;;
  esac
done

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || command -v c++ >/dev/null || missing+=(g++)
if [[ ! -f /usr/include/mosquitto.h ]] && ! pkg-config --exists libmosquitto 2>/dev/null; then
  missing+=(libmosquitto-dev)
fi
if (( ${#missing[@]} )); then
  echo "build_host.sh: missing ${missing[*]}; install with: apt-get install -y ${missing[*]}" >&2
  exit 1
fi

jobs="$(nproc 2>/dev/null || echo 2)"
cmake -S "$here" -B "$build" "${cmake_args[@]}" >/dev/null
cmake --build "$build" --parallel "$jobs"
if (( run_tests )); then
  ctest --test-dir "$build" --output-on-failure --parallel "$jobs"
fi
