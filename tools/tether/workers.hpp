// The worker-supervisor subcommands of the tether command.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "tether/supervise.hpp"
#include "tether/supervise/file.hpp"
#include "tether/sys.hpp"

namespace tether_cli {

// Adds open, list, status, exit, stop, start, restart, signal, send, logs and
// the hidden _supervise and _demo-worker to `app`. After parsing, call
// run_workers(): it returns the exit code, or -1 when none of them was given.
void add_worker_commands(CLI::App& app);
int run_workers();

// Adds up, down and scale (sets.cpp); run_sets() as run_workers().
void add_set_commands(CLI::App& app);
int run_sets();
// tether restart --rolling KEY: the instances of a definition (or the
// workers of a set) restarted one at a time, each up again before the next.
int rolling_restart(const std::string& key, double timeout);

// `tether run`'s options, as its command line sets them.
struct RunOptions {
  std::vector<std::string> argv;
  double timeout_s = 0;
  bool verbose = false;
};
// Adds `run` to `app`, parsing into `into`; returns the subcommand.
CLI::App* add_run_command(CLI::App& app, RunOptions& into);

// A --timeout's check: a number of seconds, positive (or zero, when
// zero_too) and finite, at most max (CLI::Range lets NaN through).
CLI::Validator positive_seconds(double max = 1e9, bool zero_too = false);

// This program's path (/proc/self/exe), or "tether".
std::string self_exe();

// The set's file: `file`, else ./tether.toml, else ./Procfile, loaded.
tether::Result<tether::SetDefinition> load_set(const std::string& file);
// Prints a bad set file's error and says nothing was changed: exit code 6.
int bad_file(const tether::Error& e);

// Adds save, resurrect, startup and export (boot.cpp); run_boot() as
// run_workers().
void add_boot_commands(CLI::App& app);
int run_boot();

// Adds top (top.cpp); run_top() as run_workers().
void add_top_command(CLI::App& app);
int run_top();

// A fresh worker id: 8 hex digits.
std::string new_id();

// One supervisor to start, and what became of it.
struct Start {
  tether::SupervisorSpec spec;  // its id set
  pid_t supervisor = 0, worker = 0;
  std::string error;
  bool answered = false;
};
// Starts them all together (one launcher per 500, each forking a
// supervisor per spec) and waits up to `timeout` s for each to be running,
// or ready when it waits for readiness. All or none: on any failure every
// one is stopped again, each failure is explained ("tether: WHAT NAME: …"),
// and the exit code is returned; 0 when all started.
int start_specs(const tether::StateDir& dir, std::vector<Start>& starts, double timeout,
                const char* what);

// The state directory ($TETHER_DIR, …), made when `create`.
tether::Result<tether::StateDir> state_dir(bool create);
// How the list shows a worker: its name, else its id.
std::string who(const tether::WorkerInfo& w);
// "42s", "3m05s", "2h10m", "4d01h"; "-" when not running.
std::string uptime(const tether::WorkerInfo& w);
// "812K", "3.4M", "1.2G".
std::string bytes_shown(std::uint64_t b);
// Control characters shown as \xNN: what reaches a terminal.
std::string printable(std::string_view s);
// Words joined by single spaces.
std::string join(const std::vector<std::string>& v);

// The error's exit code (docs/cli.md) after printing its message.
int report_error(const tether::Error& e);

}  // namespace tether_cli
