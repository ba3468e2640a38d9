#!/usr/bin/env bash
# Installs, from Debian's packages, whatever tether needs that is missing.
# Idempotent: does nothing (and needs no network) when all is there.
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config git
  libfmt-dev libcli11-dev nlohmann-json3-dev
  libtomlplusplus-dev  # reads a set's tether.toml (header-only, in one source file)
  libgtest-dev libbenchmark-dev
  clang-format clang-tidy-16  # tools/tidy.sh: clang 16 parses libstdc++ 12's C++23 headers
  clang-16 libclang-rt-16-dev  # the fuzz targets (clang-14 cannot compile <expected>)
  procps      # ps, used by an example
  python3     # the other end in FIFO interoperability tests
  util-linux  # setpriv: tests run a client as another user
  runit daemontools  # sv, svok, svstat, svc: tested against tether's workers
  zsh         # the zsh completion script is tested in it
  tmux        # tether top is tested in a tmux pane (send-keys, capture-pane)
  systemd     # systemd-analyze verify: the units `startup` and `export systemd` write
  libboost-dev  # Boost.Interprocess, a peer in bench_sync (compiled in CI, so it keeps building)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "tether: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
