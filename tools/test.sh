#!/usr/bin/env bash
# The README's second command: install what is missing, then build and run
# the whole test suite twice — the developer build (warnings are errors) and
# an ASan+UBSan build — run the tests that involve threads under TSan, and
# check formatting.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
jobs=$(nproc)

echo "== formatting (clang-format)"
files=$(git ls-files '*.cpp' '*.hpp' 2>/dev/null || find include src tools tests examples bench -name '*.[ch]pp')
clang-format --dry-run -Werror $files
echo "ok"

# Test processes running at once share one per-user budget for POSIX queue
# memory (RLIMIT_MSGQUEUE, 800 KiB by default); the tests keep their queues
# small, and where the limit may be raised (CAP_SYS_RESOURCE) it is.
ulimit -q unlimited 2>/dev/null || true

status=0
for config in dev asan tsan; do
  select=()
  case $config in
    dev)  flags=(-DCMAKE_BUILD_TYPE=Debug -DTETHER_DEVELOP=ON) ;;
    asan) flags=(-DCMAKE_BUILD_TYPE=Debug -DTETHER_DEVELOP=ON "-DTETHER_SANITIZE=address;undefined") ;;
    # Only the cases where tether runs threads (the reaper): TSan cannot
    # follow a clone(CLONE_VM) child, whose interceptor calls would run on
    # the parent's memory, so spawning tests are out of its reach.
    tsan) flags=(-DCMAKE_BUILD_TYPE=Debug -DTETHER_DEVELOP=ON -DTETHER_SANITIZE=thread
                 -DTETHER_EXAMPLES=OFF -DTETHER_BENCH=OFF)
          select=(-R '^Reaper\.') ;;
  esac
  echo
  echo "== build: $config"
  cmake -S . -B "build/$config" -G Ninja "${flags[@]}" >/dev/null
  cmake --build "build/$config" -j "$jobs"
  echo
  echo "== tests: $config"
  # Cases mostly wait on children and pipes: run more at once than cores.
  (cd "build/$config" && ctest -j $((jobs * 2)) --output-on-failure "${select[@]}") || status=1
done
exit $status
