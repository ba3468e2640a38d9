#!/usr/bin/env bash
# clang-tidy over tether's own sources (.clang-tidy says which checks, and
# why some are off), from a build directory's compile_commands.json made by
# g++. clang 16 parses libstdc++ 12's C++23 headers when told -std=c++2b and
# the __cpp_concepts level libstdc++ needs for <expected> (clang 16 has the
# feature, P0848, but reports the older value until clang 19).
# Usage: tools/tidy.sh BUILD_DIR [FILE...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: tools/tidy.sh BUILD_DIR [FILE...]}
shift
tidy=$(command -v clang-tidy-16 || true)
[ -n "$tidy" ] || { echo "tools/tidy.sh: clang-tidy-16 is not installed" >&2; exit 1; }
if [ $# -eq 0 ]; then
  mapfile -t files < <(git ls-files 'src/*.cpp' 'tools/*.cpp' 'tests/*.cpp' 'examples/*.cpp')
else
  files=("$@")
fi
args=(-p "$build" --quiet --extra-arg=-std=c++2b --extra-arg=-U__cpp_concepts
      --extra-arg=-D__cpp_concepts=202002L --extra-arg=-Wno-builtin-macro-redefined
      --extra-arg=-Wno-unknown-warning-option)
printf '%s\n' "${files[@]}" | xargs -P "$(nproc)" -n 4 "$tidy" "${args[@]}"
