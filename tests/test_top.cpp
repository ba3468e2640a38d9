// tether top (tools/tether/top.cpp) in a real terminal: a tmux pane on a
// server of the case's own (its socket in a private directory), driven with
// send-keys and read with capture-pane. Every case has its own state and
// configuration directories, exits every worker it opened, kills its tmux
// server and leaves nothing behind.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "cli_support.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using tether_test::CliResult;
using tether_test::on_path;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// The line of `screen` whose second word (NAME) is `name`, or "".
std::string row_of(const std::string& screen, const std::string& name) {
  std::istringstream in(screen);
  for (std::string line; std::getline(in, line);) {
    auto w = words(line);
    if (w.size() > 2 && w[1] == name) return line;
  }
  return "";
}

// The CPU% column of a worker's row, or -1.
double cpu_of(const std::string& screen, const std::string& name) {
  auto w = words(row_of(screen, name));
  if (w.size() < 5) return -1;
  try {
    return std::stod(w[4]);
  } catch (const std::exception&) {
    return -1;
  }
}

class Top : public tether_test::CliCase {
 protected:
  void SetUp() override {
    CliCase::SetUp();
    if (!on_path("tmux"))
      GTEST_SKIP() << "tmux is not installed (tools/install-deps.sh installs it)";
    tmux_dir_ = tether_test::private_dir("tether-tmux");
  }
  void TearDown() override {
    if (!tmux_dir_.empty()) {
      tmux({"kill-server"});
      std::error_code ec;
      fs::remove_all(tmux_dir_, ec);
    }
    CliCase::TearDown();
  }

  CliResult tmux(const std::vector<std::string>& args) {
    tether::Command c("tmux");
    c.args({"-S", (tmux_dir_ / "socket").string(), "-f", "/dev/null"}).args(args);
    c.env("TERM", "xterm-256color");
    return outcome(c, 20s);
  }

  // `tether top ARGS…` in a pane of `width` × `height`, its shell printing
  // how it ended.
  void start(const std::vector<std::string>& args, int width = 160, int height = 30) {
    // The pane's shell survives the Ctrl-C a case sends top (dash, unlike
    // bash, would die of it), so it can say how top ended.
    std::string cmd = fmt::format("trap : INT; env TETHER_DIR={} TETHER_CONFIG_DIR={} {} top",
                                  dir_.string(), config_.string(), TETHER_CLI);
    for (const auto& a : args) cmd += " " + a;
    // The shell stays (reading a line) so its last words stay on the pane.
    cmd += "; echo top-ended-$?; read line";
    auto r = tmux({"new-session", "-d", "-s", "top", "-x", std::to_string(width), "-y",
                   std::to_string(height), cmd});
    ASSERT_EQ(r.code, 0) << r.err;
  }

  // An interactive bash in the pane, with job control (Ctrl-Z, fg), at its
  // prompt; lines are then typed into it with type().
  void start_shell() {
    std::string cmd = fmt::format(
        "env PS1='top-shell$ ' TETHER_DIR={} TETHER_CONFIG_DIR={} bash --norc --noprofile -i",
        dir_.string(), config_.string());
    auto r = tmux({"new-session", "-d", "-s", "top", "-x", "160", "-y", "30", cmd});
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_TRUE(shows("top-shell$")) << last_;
  }
  void type(const std::string& line) {
    ASSERT_EQ(tmux({"send-keys", "-t", "top", "-l", line}).code, 0);
    ASSERT_EQ(tmux({"send-keys", "-t", "top", "Enter"}).code, 0);
  }

  // The pid of top: the child of the pane's shell (0 until there is one).
  pid_t top_pid() {
    auto shell = tmux({"display-message", "-p", "-t", "top", "#{pane_pid}"}).out;
    std::ifstream children(fmt::format("/proc/{0}/task/{0}/children", std::stoi(shell)));
    pid_t pid = 0;
    children >> pid;
    return pid;
  }

  std::string screen() { return tmux({"capture-pane", "-p", "-J", "-t", "top"}).out; }

  // Waits (up to 20 s: a bound against hanging, not a measurement) until
  // the pane shows what `ok` wants; the last screen is in `last_`.
  bool shows(const std::function<bool(const std::string&)>& ok) {
    for (int i = 0; i < 400; ++i) {
      last_ = screen();
      if (ok(last_)) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }
  bool shows(const std::string& text) {
    return shows([&](const std::string& s) { return s.find(text) != std::string::npos; });
  }

  // True once top has ended with code 0: the pane's shell says how it
  // ended (tmux's own #{pane_dead_status} is sometimes never filled in).
  bool ends_with_code_0() { return shows("top-ended-0"); }

  fs::path tmux_dir_;
  std::string last_;
};

}  // namespace

TEST_F(Top, ShowsTheWorkersUpdatesThemSortsAndQuitsWithQ) {
  open({"--name", "idle", "--", "sleep", "1000"});
  open({"--name", "spin", "--", "sh", "-c", "while :; do :; done"});
  start({"--interval", "0.2"});
  ASSERT_TRUE(shows([](const std::string& s) {
    return !row_of(s, "idle").empty() && !row_of(s, "spin").empty();
  })) << last_;
  EXPECT_NE(last_.find("tether top"), std::string::npos) << last_;
  EXPECT_NE(row_of(last_, "spin").find(" up "), std::string::npos) << last_;
  // CPU is measured between refreshes: the busy loop's rises above zero,
  // the sleeper's stays at zero.
  ASSERT_TRUE(shows([](const std::string& s) { return cpu_of(s, "spin") > 0; })) << last_;
  EXPECT_EQ(cpu_of(last_, "idle"), 0.0) << last_;

  // It follows what changes: a worker started after it appears, one that
  // exits goes.
  open({"--name", "late", "--", "sleep", "1000"});
  EXPECT_TRUE(shows([](const std::string& s) { return !row_of(s, "late").empty(); })) << last_;
  ASSERT_EQ(cli("exit", {"idle"}).code, 0);
  EXPECT_TRUE(shows([](const std::string& s) { return row_of(s, "idle").empty(); })) << last_;

  // c sorts by CPU: the busy loop comes first.
  ASSERT_EQ(tmux({"send-keys", "-t", "top", "c"}).code, 0);
  EXPECT_TRUE(shows([](const std::string& s) {
    if (s.find("sorted by cpu") == std::string::npos) return false;
    auto spin = s.find(row_of(s, "spin")), late = s.find(row_of(s, "late"));
    return !row_of(s, "spin").empty() && !row_of(s, "late").empty() && spin < late;
  })) << last_;
  ASSERT_EQ(tmux({"send-keys", "-t", "top", "n"}).code, 0);
  EXPECT_TRUE(shows("sorted by name")) << last_;

  // q ends it with code 0 and the terminal put back: the alternate screen
  // left, so what it drew is gone from the pane.
  ASSERT_EQ(tmux({"send-keys", "-t", "top", "q"}).code, 0);
  EXPECT_TRUE(ends_with_code_0()) << last_;
  EXPECT_EQ(last_.find("tether top"), std::string::npos) << last_;
}

TEST_F(Top, ASmallTerminalSaysHowManyMoreAndCtrlCEndsIt) {
  auto r = cli("open", {"--count", "8", "--name", "many", "--", "sleep", "1000"});
  ASSERT_EQ(r.code, 0) << r.err;
  start({"--interval", "0.2"}, 100, 8);
  // 8 lines: two of heading, a blank, the columns, three workers and "… 5 more".
  ASSERT_TRUE(shows("… 5 more")) << last_;
  EXPECT_NE(last_.find("8 workers, 8 up"), std::string::npos) << last_;
  std::istringstream lines(last_);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_LE(line.size(), 100u + 2) << line;  // cut to the width ("…" is 3 bytes, 1 column)
  }
  // A wider terminal shows them all (SIGWINCH redraws).
  ASSERT_EQ(tmux({"resize-window", "-t", "top", "-x", "120", "-y", "20"}).code, 0);
  EXPECT_TRUE(shows([](const std::string& s) {
    return !row_of(s, "many-8").empty() && s.find("more") == std::string::npos;
  })) << last_;
  // One shorter than the heading: the frame is cut to it, heading first
  // (not every row printed, scrolling the heading away).
  ASSERT_EQ(tmux({"resize-window", "-t", "top", "-x", "120", "-y", "3"}).code, 0);
  EXPECT_TRUE(shows([](const std::string& s) {
    return s.rfind("tether top", 0) == 0 && s.find("many-") == std::string::npos;
  })) << last_;
  ASSERT_EQ(tmux({"send-keys", "-t", "top", "C-c"}).code, 0);
  EXPECT_TRUE(ends_with_code_0()) << last_;
  EXPECT_EQ(last_.find("tether top"), std::string::npos) << last_;
}

// SIGTERM (or HUP, QUIT) from outside: the terminal put back, and the code
// a shell gives a process the signal killed, 128 + 15.
TEST_F(Top, SigtermEndsItWithTheTerminalPutBack) {
  open({"--name", "idle", "--", "sleep", "1000"});
  start({"--interval", "0.2"});
  ASSERT_TRUE(shows([](const std::string& s) { return !row_of(s, "idle").empty(); })) << last_;
  pid_t pid = top_pid();
  ASSERT_GT(pid, 1);
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  EXPECT_TRUE(shows("top-ended-143")) << last_;
  EXPECT_EQ(last_.find("tether top"), std::string::npos) << last_;
}

// Ctrl-Z under a shell with job control: top stops with the terminal as it
// was (the shell says it stopped); fg brings it back, redrawn, and q ends it.
TEST_F(Top, CtrlZStopsItAndFgBringsItBack) {
  if (!on_path("bash")) GTEST_SKIP() << "no bash";
  open({"--name", "idle", "--", "sleep", "1000"});
  start_shell();
  type(std::string(TETHER_CLI) + " top --interval 0.2");
  ASSERT_TRUE(shows([](const std::string& s) { return !row_of(s, "idle").empty(); })) << last_;
  ASSERT_EQ(tmux({"send-keys", "-t", "top", "C-z"}).code, 0);
  EXPECT_TRUE(shows([](const std::string& s) {
    // (the typed command line holds "tether top": the frame's "sorted by" must be gone)
    return s.find("Stopped") != std::string::npos && s.find("sorted by") == std::string::npos;
  })) << last_;
  type("fg");
  EXPECT_TRUE(shows([](const std::string& s) { return !row_of(s, "idle").empty(); })) << last_;
  ASSERT_EQ(tmux({"send-keys", "-t", "top", "q"}).code, 0);
  // Typed only at the shell's next prompt (the third): keys typed while top
  // still runs are its, or flushed when it puts the terminal back.
  ASSERT_TRUE(shows([](const std::string& s) {
    std::size_t prompts = 0;
    for (auto at = s.find("top-shell$"); at != std::string::npos; at = s.find("top-shell$", at + 1))
      ++prompts;
    return prompts >= 3 && s.find("sorted by") == std::string::npos;
  })) << last_;
  type("echo top-ended-$?");
  EXPECT_TRUE(ends_with_code_0()) << last_;
}

TEST_F(Top, BatchPrintsPlainFramesOfTheWorkersAsked) {
  open({"--name", "web", "--", "sleep", "1000"});
  open({"--name", "other", "--", "sleep", "1000"});
  auto b = cli("top", {"--batch", "-n", "2", "--interval", "0.1", "web"});
  ASSERT_EQ(b.code, 0) << b.err;
  std::size_t frames = 0;
  for (auto at = b.out.find("tether top"); at != std::string::npos;
       at = b.out.find("tether top", at + 1)) {
    ++frames;
  }
  EXPECT_EQ(frames, 2u) << b.out;
  EXPECT_FALSE(row_of(b.out, "web").empty()) << b.out;
  EXPECT_TRUE(row_of(b.out, "other").empty()) << b.out;  // not asked for
  EXPECT_EQ(b.out.find('\x1b'), std::string::npos) << "no escape sequence in a pipe";
  // Not a terminal and no --batch: said, code 2.
  auto live = cli("top");
  EXPECT_EQ(live.code, 2);
  EXPECT_NE(live.err.find("not a terminal"), std::string::npos) << live.err;
  EXPECT_EQ(cli("top", {"--batch", "--interval", "0"}).code, 2);
  EXPECT_EQ(cli("top", {"--batch", "--sort", "colour"}).code, 2);
  // A long batch: a resize (SIGWINCH) does not end it; SIGTERM does, as
  // the signal ends a process (a shell sees 143).
  auto longer = command("top", {"--batch", "-n", "100000", "--interval", "0.1"});
  auto p = longer.stdout_to(tether::Stdio::pipe()).stderr_to(tether::Stdio::null()).spawn();
  ASSERT_TRUE(p) << p.error().message();
  tether::PipeReader out(std::move(p->stdout_fd()));
  std::string seen;
  ASSERT_TRUE(tether_test::read_until(out, seen, "tether top")) << seen;
  ASSERT_EQ(::kill(p->pid(), SIGWINCH), 0);
  seen.clear();
  ASSERT_TRUE(tether_test::read_until(out, seen, "tether top")) << "a frame after the resize";
  ASSERT_EQ(::kill(p->pid(), SIGTERM), 0);
  auto ended = p->wait(20s);
  ASSERT_TRUE(ended) << ended.error().message();
  EXPECT_EQ(ended->signal().value_or(0), SIGTERM) << ended->describe();
  // No workers yet: a frame that says so.
  ASSERT_EQ(cli("exit", {"all"}).code, 0);
  auto none = cli("top", {"--batch"});
  ASSERT_EQ(none.code, 0) << none.err;
  EXPECT_NE(none.out.find("no workers"), std::string::npos) << none.out;
  // A state directory that cannot be read (here a file in its place): the
  // frame says why, and the code is 1.
  auto file = dir_.parent_path() / (dir_.filename().string() + "-file");
  { std::ofstream(file) << "not a directory"; }
  auto c = command("top", {"--batch"});
  c.env("TETHER_DIR", file.string());
  auto bad = outcome(c, 30s);
  fs::remove(file);
  EXPECT_EQ(bad.code, 1) << bad.out << bad.err;
  EXPECT_NE(bad.out.find("tether: top: "), std::string::npos) << bad.out;
}
