#!/usr/bin/env bash
# The README's second command: install what is missing, then build and run
# the whole test suite twice — the developer build (warnings are errors) and
# an ASan+UBSan build — run the tests that involve threads under TSan,
# check formatting, and run each fuzz target briefly over its corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
jobs=$(nproc)

echo "== formatting (clang-format) [${SECONDS} s]"
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
          select=(-R '^(Reaper\.|QueueTest\.ManyToMany)') ;;
  esac
  echo
  echo "== build: $config [${SECONDS} s]"
  cmake -S . -B "build/$config" -G Ninja "${flags[@]}" >/dev/null
  # TSan runs the reaper's cases alone: only the test program is built.
  target=()
  [ "$config" = tsan ] && target=(--target tether_tests)
  cmake --build "build/$config" -j "$jobs" "${target[@]}"
  echo
  echo "== tests: $config [${SECONDS} s]"
  # Cases mostly wait on children and pipes: run more at once than cores.
  (cd "build/$config" && ctest -j $((jobs * 2)) --output-on-failure "${select[@]}") || status=1
done

# clang-tidy (.clang-tidy: the checks, and why some are off; examples/
# .clang-tidy: the one check off there) over the library, the tools, the
# tests and the examples, from the developer build's compile commands. Any
# finding fails the run (status=1); the steps after it still run.
echo
echo "== clang-tidy (library, tools, tests and examples) [${SECONDS} s]"
if tools/tidy.sh build/dev $(git ls-files 'src/*.cpp' 'tools/*.cpp' 'tests/*.cpp' 'examples/*.cpp'); then
  echo "ok"
else
  echo "clang-tidy: FAILED (findings above; fix them, or turn a check off in .clang-tidy with its reason)"
  status=1
fi

# Every fuzz target (fuzz/, docs/fuzzing.md) over its seed corpus for a
# short fixed time, so that a regression in a parser is caught here. Clang
# 16 (clang-14 cannot compile libstdc++ 12's <expected>); -O1 builds
# faster than -O2 and fuzzes about as fast. New inputs go to a scratch
# directory, never into the committed corpus.
echo
echo "== build: fuzz (clang-16) [${SECONDS} s]"
CXX=clang++-16 cmake -S . -B build/fuzz-ci -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" -DTETHER_FUZZ=ON -DTETHER_DEVELOP=OFF \
  -DTETHER_TESTS=OFF -DTETHER_EXAMPLES=OFF -DTETHER_BENCH=OFF -DTETHER_TOOLS=OFF >/dev/null
cmake --build build/fuzz-ci -j "$jobs"
echo
echo "== fuzz: 20 s per target over its corpus [${SECONDS} s]"
for target in address frame control launch status cli setfile; do
  scratch="build/fuzz-ci/corpus/$target"
  rm -rf "$scratch" && mkdir -p "$scratch" build/fuzz-ci/artifacts
  if build/fuzz-ci/fuzz/fuzz_$target -max_total_time=20 -timeout=5 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="build/fuzz-ci/artifacts/$target-" \
       "$scratch" "fuzz/corpus/$target" >"build/fuzz-ci/fuzz-$target.log" 2>&1; then
    echo "fuzz_$target: ok ($(grep -o 'stat::number_of_executed_units: [0-9]*' \
      "build/fuzz-ci/fuzz-$target.log" | grep -o '[0-9]*$') runs)"
  else
    echo "fuzz_$target: FAILED (build/fuzz-ci/fuzz-$target.log, build/fuzz-ci/artifacts/):"
    tail -n 40 "build/fuzz-ci/fuzz-$target.log"
    status=1
  fi
done
echo
echo "== done in ${SECONDS} s: $([ $status -eq 0 ] && echo passed || echo FAILED)"
exit $status
