// The tether command as the tests run it: a fixture with its own state and
// configuration directories ($TETHER_DIR, $TETHER_CONFIG_DIR) for every
// command, which exits every worker a case opened and fails the case if
// anything is left in them. Used by the supervisor, completion and top tests.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "support.hpp"

namespace tether_test {

struct CliResult {
  int code = -1;  // the exit code, 128 + the signal that killed it, -1 when it did not run
  std::string out, err;
};

// A private directory (mkdtemp: mode 0700, a unique name) under the
// temporary directory.
inline std::filesystem::path private_dir(const std::string& stem) {
  std::string templ = (std::filesystem::temp_directory_path() / (stem + "-XXXXXX")).string();
  if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp " + templ);
  return templ;
}

// True when `program` is an executable file in a directory of $PATH.
inline bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "");
  for (std::string d; std::getline(dirs, d, ':');) {
    if (!d.empty() && ::access((std::filesystem::path(d) / program).c_str(), X_OK) == 0)
      return true;
  }
  return false;
}

// Reads `in` into `seen` until `seen` holds `text`; false at end of file or
// when one read waits longer than `each` (a bound against hanging, not a
// measurement).
inline bool read_until(tether::PipeReader& in, std::string& seen, const std::string& text,
                       std::chrono::milliseconds each = std::chrono::seconds(20)) {
  std::byte buf[4096];
  while (seen.find(text) == std::string::npos) {
    auto n = in.read(buf, each);
    if (!n || *n == 0) return false;
    seen.append(reinterpret_cast<const char*>(buf), *n);
  }
  return true;
}

class CliCase : public Clean {
 protected:
  void SetUp() override {
    Clean::SetUp();
    dir_ = private_dir("tether-state");
    // `up` records sets in the configuration directory: the case's own,
    // never the user's.
    config_ = private_dir("tether-config");
  }

  // Exits whatever is still there; then nothing may be left.
  void TearDown() override {
    auto l = cli("list", {"--json"});
    if (l.code != 0) ADD_FAILURE() << "list: " << l.code << " " << l.err << l.out;
    if (l.code == 0) {
      nlohmann::json all = nlohmann::json::parse(l.out);  // named: a range-for over a
                                                          // temporary's member dangles
      for (const auto& w : all["workers"]) {
        auto id = w["id"].get<std::string>();
        if (w["state"] == "dead-supervisor") {
          cli("list", {"--prune"});
        } else {
          auto x = cli("exit", {id});
          if (x.code != 0) ADD_FAILURE() << "exit " << id << ": " << x.code << " " << x.err;
        }
      }
    }
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
      ADD_FAILURE() << "left behind: " << e.path();
    }
    std::filesystem::remove_all(dir_, ec);
    std::filesystem::remove_all(config_, ec);
    Clean::TearDown();
  }

  // `c` with the case's directories in its environment.
  tether::Command& with_dirs(tether::Command& c) const {
    return c.env("TETHER_DIR", dir_.string()).env("TETHER_CONFIG_DIR", config_.string());
  }

  // `tether SUB ARGS…` as the case runs it.
  tether::Command command(const std::string& sub, const std::vector<std::string>& args = {}) const {
    tether::Command c(TETHER_CLI);
    c.arg(sub).args(args);
    with_dirs(c);
    return c;
  }

  // Runs `c` to its end (or `deadline`, then it is killed): its code and output.
  static CliResult outcome(tether::Command& c, tether::Deadline deadline) {
    auto o = c.output({}, deadline);
    if (!o) return {-1, "", o.error().message()};
    return {o->status.code().value_or(128 + o->status.signal().value_or(0)), o->out, o->err};
  }

  CliResult cli(const std::string& sub, const std::vector<std::string>& args = {},
                tether::Deadline deadline = std::chrono::seconds(30)) {
    auto c = command(sub, args);
    return outcome(c, deadline);
  }

  // Opens a worker (`tether open --json ARGS…`) and returns its id.
  std::string open(std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    auto r = cli("open", args);
    EXPECT_EQ(r.code, 0) << r.err;
    if (r.code != 0) throw std::runtime_error("open failed: " + r.err);
    return nlohmann::json::parse(r.out)["id"].get<std::string>();
  }

  nlohmann::json status(const std::string& key) {
    auto r = cli("status", {key, "--json"});
    if (r.code != 0) throw std::runtime_error("status failed: " + r.err);
    return nlohmann::json::parse(r.out);
  }

  std::filesystem::path dir_, config_;
};

}  // namespace tether_test
