#!/usr/bin/env bash
# The README's first command: install what is missing, build, and show the
# main job at work.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DTETHER_TESTS=OFF -DTETHER_BENCH=OFF -DTETHER_DEVELOP=OFF >/dev/null
cmake --build build/release

echo
echo "== tether demo: processes and pipes at work"
build/release/tether demo
