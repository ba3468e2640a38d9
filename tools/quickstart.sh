#!/usr/bin/env bash
# The README's first command: install what is missing, build, and run the
# main job — a worker started under its own supervisor, listed, sent a
# message, its log shown, and stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DTETHER_TESTS=OFF -DTETHER_BENCH=OFF -DTETHER_DEVELOP=OFF >/dev/null
cmake --build build/release

tether=build/release/tether
name="quickstart-$$"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step tether open --name "$name"
$tether open --name "$name"
step tether list
$tether list
step tether send "$name" "hello, worker"
$tether send "$name" "hello, worker"
# The message travels FIFO -> supervisor -> worker -> log: wait for it.
for _ in $(seq 100); do
  $tether logs "$name" | grep -q "received: hello, worker" && break
  sleep 0.05
done
step tether logs "$name"
$tether logs "$name"
step tether exit "$name"
$tether exit "$name"
step tether list
$tether list
