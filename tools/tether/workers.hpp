// The worker-supervisor subcommands of the tether command.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "tether/sys.hpp"

namespace tether_cli {

// Adds open, list, status, exit, stop, start, restart, signal, send, logs and
// the hidden _supervise and _demo-worker to `app`. After parsing, call
// run_workers(): it returns the exit code, or -1 when none of them was given.
void add_worker_commands(CLI::App& app);
int run_workers();

// `tether run`'s options, as its command line sets them.
struct RunOptions {
  std::vector<std::string> argv;
  double timeout_s = 0;
  bool verbose = false;
};
// Adds `run` to `app`, parsing into `into`; returns the subcommand.
CLI::App* add_run_command(CLI::App& app, RunOptions& into);

// The error's exit code (docs/cli.md) after printing its message.
int report_error(const tether::Error& e);

}  // namespace tether_cli
