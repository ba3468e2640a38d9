// tether-supervise: the supervisors of workers, as `tether open` starts them.
// A program of its own, linked statically and without the command-line
// parser, so that each of the many copies that run at once stays small
// (docs/benchmarks.md). Not meant to be run by hand: it reads its work from
// the pipe on fd 0 (tether/supervise/launch.hpp).
#include "launcher.hpp"

int main() {
  return tether_cli::launcher_main();
}
