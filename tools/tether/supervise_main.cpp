// tether-supervise: one worker's supervisor, as `tether open` starts it.
// A program of its own, linked statically and without the command-line
// parser, so that each of the many copies that run at once stays small
// (docs/benchmarks.md). Not meant to be run by hand.
#include "tether/supervise.hpp"

int main(int argc, char** argv) {
  return tether::supervise_main(argc, argv);
}
