// fuzz_cli: the tether command line, parse only. The input is argv (without
// argv[0]), split on NUL bytes; each run builds a fresh CLI::App as
// tools/tether/main.cpp does (run, demo, the worker commands of
// tools/tether/workers.cpp) and parses it. Nothing is run: run_workers() is
// never called. What the parser lets through is checked against the
// ranges the commands and the launch protocol rely on.
//
// workers.cpp keeps the parsed options in a global `opt` (and the
// subcommand pointers) in an anonymous namespace; it is compiled into this
// file, so each run starts from a fresh Options{} as the real command does.
#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "check.hpp"
#include "sets.cpp"     // NOLINT(bugprone-suspicious-include): the same, for up/down/scale
#include "workers.cpp"  // NOLINT(bugprone-suspicious-include): see above

namespace {

// What the parser accepts but the program cannot take: known findings
// (docs/fuzzing.md), printed once each, not fatal.
void note(const std::string& what) {
  static std::set<std::string> seen;
  if (seen.insert(what).second) std::fprintf(stderr, "fuzz_cli: note: %s\n", what.c_str());
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 4096) return -1;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args;
  for (;;) {
    auto z = text.find('\0');
    args.emplace_back(text.substr(0, z));
    if (z == std::string_view::npos) break;
    text.remove_prefix(z + 1);
  }
  if (args.size() > 64) return -1;
  if (!args.empty() && args[0] == "_supervise") return -1;  // main() hands it to the launcher

  using tether_cli::opt;
  opt = tether_cli::Options{};
  tether_cli::sopt = tether_cli::SetOptions{};
  CLI::App app{"tether: Linux processes and the channels between them"};
  app.set_version_flag("--version", std::string("tether ") + TETHER_VERSION_STRING);
  app.require_subcommand(0, 1);
  tether_cli::RunOptions run_opt;
  auto* run_cmd = tether_cli::add_run_command(app, run_opt);
  app.add_subcommand("demo", "Show processes and pipes at work, step by step");
  tether_cli::add_worker_commands(app);
  tether_cli::add_set_commands(app);

  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 pops from the back
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    FUZZ_CHECK(!app.help().empty(), "empty help");
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    FUZZ_CHECK(!app.help("", CLI::AppFormatMode::All).empty(), "empty help");
    return 0;
  } catch (const CLI::ParseError& e) {
    FUZZ_CHECK(e.get_exit_code() != 0 || std::string(e.get_name()) == "CallForVersion",
               "a parse error with exit code 0: %s", e.what());
    return 0;
  }

  using namespace tether_cli;
  if (*run_cmd) FUZZ_CHECK(!run_opt.argv.empty(), "run without a command");
  if (*up_cmd || *down_cmd || *scale_cmd) {
    FUZZ_CHECK(std::isfinite(sopt.timeout) && sopt.timeout > 0 && sopt.timeout <= 86400,
               "up/down/scale --timeout %g", sopt.timeout);
  }
  if (*scale_cmd) FUZZ_CHECK(!sopt.names.empty(), "scale without NAME=N");
  if (*open_cmd) {
    FUZZ_CHECK(opt.count >= 1 && opt.count <= 10000, "--count %d", opt.count);
    FUZZ_CHECK(opt.ready_fd >= 3 && opt.ready_fd <= 1023, "--ready-fd %d", opt.ready_fd);
    FUZZ_CHECK(opt.log_keep >= 0 && opt.log_keep <= 100, "--log-keep %d", opt.log_keep);
    FUZZ_CHECK(opt.log_size >= 4096 && opt.log_size <= 1'000'000'000'000ull, "--log-size %llu",
               static_cast<unsigned long long>(opt.log_size));
    FUZZ_CHECK(std::isfinite(opt.timeout) && opt.timeout > 0 && opt.timeout <= 86400,
               "open --timeout %g", opt.timeout);
    FUZZ_CHECK(std::isfinite(opt.grace) && opt.grace >= 0 && opt.grace <= 3600, "--grace %g",
               opt.grace);
    FUZZ_CHECK(
        std::isfinite(opt.poll_interval) && opt.poll_interval > 0 && opt.poll_interval <= 3600,
        "--poll-interval %g", opt.poll_interval);
    FUZZ_CHECK(tether::parse_restart_policy(opt.restart).has_value(), "--restart %s",
               opt.restart.c_str());
    // The launch protocol (decode_spec) takes -1 to 2^30 restarts.
    if (opt.max_restarts < -1 || opt.max_restarts > (1 << 30)) {
      note(
          "open --max-restarts N outside -1 to 2^30 is accepted; the supervisor then refuses "
          "the spec");
    }
    // The spec is JSON: nlohmann::json::dump() throws on invalid UTF-8.
    bool utf8 = valid_utf8(opt.cwd) && valid_utf8(opt.name);
    for (const auto& s : opt.command) utf8 = utf8 && valid_utf8(s);
    for (const auto& s : opt.env) utf8 = utf8 && valid_utf8(s);
    if (!utf8) note("open with a word that is not UTF-8 is accepted; encode_spec then throws");
  }
  for (CLI::App* cmd : {exit_cmd, stop_cmd, start_cmd, restart_cmd}) {
    if (*cmd) {
      FUZZ_CHECK(std::isfinite(opt.timeout) && opt.timeout > 0 && opt.timeout <= 1e9,
                 "%s --timeout %g", cmd->get_name().c_str(), opt.timeout);
      FUZZ_CHECK(!opt.keys.empty(), "no worker");
    }
  }
  if (*demo_worker_cmd && demo_worker_cmd->count("--poll-interval") && opt.poll_interval > 0 &&
      !(opt.poll_interval * 1000 < 9.2e18)) {
    note(
        "_demo-worker --poll-interval above 9.2e15 s (or inf) overflows the conversion to "
        "milliseconds (undefined behaviour)");
  }
  return 0;
}
