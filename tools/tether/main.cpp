// The tether command.
//
// Exit codes (documented in docs/cli.md):
//   0  success
//   1  the operation failed (the message says which object and why)
//   2  bad command line
//   3  no such worker
//   4  the worker is not running (its supervisor is not listening)
//   5  timed out waiting for the effect
//   `tether run` exits with the child's code, or 128 + signal only when it
//   must look like a shell; it prints the exact status on stderr with -v.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "completion.hpp"
#include "launcher.hpp"
#include "tether/tether.hpp"
#include "workers.hpp"

namespace {

int report(const tether::Error& e) {
  fmt::print(stderr, "tether: {}\n", e.message());
  return 1;
}

void print_usage(const tether::Usage& u) {
  fmt::print(stderr,
             "  user cpu {:.3f} s, system cpu {:.3f} s, max rss {} KiB\n"
             "  page faults {} minor / {} major, context switches {} voluntary / {} involuntary\n",
             static_cast<double>(u.user_cpu.count()) / 1e6,
             static_cast<double>(u.system_cpu.count()) / 1e6, u.max_rss_kib, u.minor_faults,
             u.major_faults, u.voluntary_switches, u.involuntary_switches);
}

// `tether run`: spawn, wait (optionally with a deadline), report the status
// with exit code and signal kept apart, and resource usage.
int run(const std::vector<std::string>& argv, double timeout_s, bool verbose) {
  tether::Command cmd(argv.front());
  for (std::size_t i = 1; i < argv.size(); ++i) cmd.arg(argv[i]);
  auto proc = cmd.spawn();
  if (!proc) return report(proc.error());
  tether::Deadline deadline;
  if (timeout_s > 0) deadline = std::chrono::duration<double>(timeout_s);
  auto status = proc->wait(deadline);
  if (!status && status.error() == std::errc::timed_out) {
    fmt::print(stderr, "tether: {} still running after {} s: terminating it\n", cmd.describe(),
               timeout_s);
    status = proc->terminate(std::chrono::seconds(2));
  }
  if (!status) return report(status.error());
  if (verbose) {
    fmt::print(stderr, "tether: {} (pid {}) {}\n", cmd.describe(), status->pid(),
               status->describe());
    print_usage(status->usage());
  }
  // A shell-compatible code for scripts; -v prints the exact status.
  return status->code() ? *status->code() : 128 + *status->signal();
}

// `tether demo`: the foundation at work, step by step.
int demo() {
  using namespace std::chrono_literals;
  fmt::print("1. spawn `echo hello from a child` and capture its output\n");
  auto out = tether::Command("echo").arg("hello from a child").output();
  if (!out) return report(out.error());
  fmt::print("   child said: {}   status: {}\n", out->out.substr(0, out->out.size() - 1),
             out->status.describe());

  fmt::print("2. a pipeline, like `ps -eo pid,comm | grep tether`\n");
  auto pipeline =
      tether::Command("ps").args({"-eo", "pid,comm"}) | tether::Command("grep").arg("tether");
  auto piped = pipeline.output();
  if (!piped) return report(piped.error());
  fmt::print("{}", piped->out);
  fmt::print("   stage statuses: {} / {}\n", piped->statuses[0].describe(),
             piped->statuses[1].describe());

  fmt::print("3. exit(137) versus killed by SIGKILL: never confused\n");
  auto by_code = tether::Command("sh").args({"-c", "exit 137"}).status();
  if (!by_code) return report(by_code.error());
  auto sleeper = tether::Command("sleep").arg("30").spawn();
  if (!sleeper) return report(sleeper.error());
  auto by_signal = sleeper->kill();
  if (!by_signal) return report(by_signal.error());
  fmt::print("   sh -c 'exit 137': {}\n   sleep 30 + SIGKILL: {}\n", by_code->describe(),
             by_signal->describe());

  fmt::print("4. a pipe from parent to a forked child\n");
  auto pipe = tether::Pipe::create();
  if (!pipe) return report(pipe.error());
  auto child = tether::fork([&]() {
    (void)pipe->writer.close();
    auto text = pipe->reader.read_all();
    fmt::print("   child {} read: {}\n", ::getpid(), text ? *text : text.error().message());
    return 0;
  });
  if (!child) return report(child.error());
  (void)pipe->reader.close();
  if (auto w = pipe->writer.write_all(fmt::format("hello from parent {}", ::getpid())); !w) {
    return report(w.error());
  }
  (void)pipe->writer.close();
  auto st = child->wait(5s);
  if (!st) return report(st.error());
  fmt::print("   child {}\n", st->describe());

  fmt::print("5. exec failure is an error from spawn, not a zombie\n");
  auto missing = tether::Command("/no/such/program").spawn();
  fmt::print("   {}\n", missing ? "unexpectedly started" : missing.error().message());
  return 0;
}

}  // namespace

static int run_main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "_supervise") {
    return tether_cli::launcher_main();  // tether-supervise's fallback (see open)
  }
  CLI::App app{"tether: Linux processes and the channels between them"};
  app.set_version_flag("--version", std::string("tether ") + TETHER_VERSION_STRING);
  app.require_subcommand(0, 1);

  tether_cli::RunOptions run_opt;
  auto* run_cmd = tether_cli::add_run_command(app, run_opt);

  auto* demo_cmd = app.add_subcommand("demo", "Show processes and pipes at work, step by step");
  tether_cli::add_worker_commands(app);
  tether_cli::add_set_commands(app);
  tether_cli::add_boot_commands(app);
  tether_cli::add_top_command(app);
  tether_cli::add_completion_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (*run_cmd) return run(run_opt.argv, run_opt.timeout_s, run_opt.verbose);
  if (*demo_cmd) return demo();
  if (int code = tether_cli::run_workers(); code >= 0) return code;
  if (int code = tether_cli::run_sets(); code >= 0) return code;
  if (int code = tether_cli::run_boot(); code >= 0) return code;
  if (int code = tether_cli::run_top(); code >= 0) return code;
  if (int code = tether_cli::run_completion(); code >= 0) return code;
  fmt::print("{}", app.help());
  return 0;
}

int main(int argc, char** argv) {
  // tether reports errors as values; what can still throw here is the
  // parser's construction or the allocator. Said, not a core dump.
  try {
    return run_main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tether: %s\n", e.what());
    return 1;
  }
}
