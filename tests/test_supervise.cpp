// The worker supervisor, through the real `tether` command (as a user runs
// it) and through the library. Every case has its own state directory
// ($TETHER_DIR), exits every worker it opened, and checks that no
// supervisor, worker or directory is left behind.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>
#include <atomic>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cli_support.hpp"
#include "support.hpp"
#include "tether/supervise/saved.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using tether_test::Clean;
using tether_test::must;
namespace fs = std::filesystem;

namespace {

using tether_test::CliResult;

class Supervise : public tether_test::CliCase {
 protected:
  std::string log_of(const std::string& id) {
    std::ifstream in(dir_ / id / "worker.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // Waits (up to 20 s; the figure is a bound against hanging, not a
  // measurement) until the worker's log contains `text`.
  bool log_shows(const std::string& id, const std::string& text) {
    for (int i = 0; i < 2000; ++i) {
      if (log_of(id).find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }
};

// A pidfd for a process that is not our child; readable once it has ended.
tether::Fd pidfd(pid_t pid) {
  auto p = tether::Pidfd::open(pid);
  return p ? p->release() : tether::Fd();
}

bool ends_within(const tether::Fd& fd, tether::Deadline d) {
  auto r = tether::wait_fd(fd.get(), POLLIN, d, "process");
  return r.has_value();
}

}  // namespace

TEST_F(Supervise, OpenListSendExitWithTheLogShown) {
  std::string id = open({"--name", "demo"});
  auto l = cli("list", {"--json"});
  ASSERT_EQ(l.code, 0) << l.err;
  auto j = json::parse(l.out);
  ASSERT_EQ(j["workers"].size(), 1u);
  auto pid = j["workers"][0]["pid"].get<int>();
  EXPECT_EQ(j["pids"][std::to_string(pid)], id);  // the reference system's {pid: id}
  EXPECT_EQ(j["workers"][0]["state"], "up");
  auto text = cli("list");
  EXPECT_NE(text.out.find("demo"), std::string::npos) << text.out;

  auto s = cli("send", {"demo", "hello", "there"});
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_TRUE(log_shows(id, "received: hello there")) << log_of(id);

  auto sup = pidfd(j["workers"][0]["supervisor_pid"].get<int>());
  auto worker = pidfd(pid);
  auto e = cli("exit", {std::to_string(pid)});  // by pid
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_NE(e.out.find("has exited"), std::string::npos);
  // It waited: supervisor and worker are gone when it returns.
  EXPECT_TRUE(ends_within(sup, tether::Deadline::immediate()));
  EXPECT_TRUE(ends_within(worker, tether::Deadline::immediate()));
  EXPECT_FALSE(fs::exists(dir_ / id));
}

TEST_F(Supervise, NonBlockingDemoWorkerPollsAndSaysTheFifoIsEmpty) {
  std::string id = open({"--non-blocking", "--poll-interval", "0.05"});
  EXPECT_TRUE(log_shows(id, "FIFO is empty")) << log_of(id);
  ASSERT_EQ(cli("send", {id, "ping"}).code, 0);
  EXPECT_TRUE(log_shows(id, "received: ping")) << log_of(id);
}

TEST_F(Supervise, ACommandThatCannotStartIsExplainedAndLeavesNothing) {
  auto r = cli("open", {"--", "/no/such/program"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("/no/such/program"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("ENOENT"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_empty(dir_));
  // A worker that dies before it is ready: also an error, nothing left.
  auto early = cli("open", {"--wait-ready", "--", "sh", "-c", "exit 7"});
  EXPECT_EQ(early.code, 1);
  EXPECT_NE(early.err.find("exited with code 7"), std::string::npos) << early.err;
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(Supervise, UnknownWorkersAndBadUsageHaveTheirExitCodes) {
  auto r = cli("exit", {"999999"});
  EXPECT_EQ(r.code, 3);
  EXPECT_NE(r.err.find("no worker with pid 999999"), std::string::npos) << r.err;
  auto n = cli("send", {"nosuchname", "x"});
  EXPECT_EQ(n.code, 3);
  EXPECT_NE(n.err.find("'nosuchname'"), std::string::npos) << n.err;
  EXPECT_EQ(cli("open", {"--restart", "sometimes"}).code, 2);
  EXPECT_EQ(cli("open", {"--name", "12345"}).code, 2);  // a name that looks like a pid
  EXPECT_EQ(cli("open", {"--ready-fd", "1"}).code, 2);  // would replace the worker's stdout
  EXPECT_EQ(cli("open", {"--grace", "-1"}).code, 2);
  EXPECT_TRUE(fs::is_empty(dir_));  // bad input leaves nothing
  std::string id = open({"--name", "web"});
  auto dup = cli("open", {"--name", "web"});
  EXPECT_EQ(dup.code, 1);
  EXPECT_NE(dup.err.find("already running"), std::string::npos) << dup.err;
  (void)id;
}

TEST_F(Supervise, CountStartsNamedWorkersAllOrNothing) {
  auto r = cli("open", {"--count", "3", "--name", "pool", "--json", "--", "sleep", "1000"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto started = json::parse(r.out);
  ASSERT_EQ(started.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    auto name = "pool-" + std::to_string(i + 1);
    EXPECT_EQ(started[i]["name"], name);
    EXPECT_EQ(status(name)["state"], "up");
  }
  for (const auto& w : started) ASSERT_EQ(cli("exit", {w["id"].get<std::string>()}).code, 0);
  // One that cannot get ready makes them all go: nothing is left.
  auto bad =
      cli("open", {"--count", "2", "--wait-ready", "--timeout", "0.5", "--", "sleep", "1000"});
  EXPECT_EQ(bad.code, 5) << bad.err;
  EXPECT_NE(bad.err.find("was not ready within 0.5 s"), std::string::npos) << bad.err;
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(Supervise, WaitReadyReturnsOnceTheWorkerSaysSo) {
  std::string id =
      open({"--wait-ready", "--", "sh", "-c", "sleep 0.2; echo ready >&3; exec sleep 1000"});
  EXPECT_EQ(status(id)["state"], "up");
  EXPECT_TRUE(log_shows(id, "worker is ready"));
}

TEST_F(Supervise, GarbageLongLinesAndUnknownCommandsAreLoggedAndIgnored) {
  std::string id = open({});
  int pid = status(id)["pid"];
  {
    tether::Fd fd(::open((dir_ / id / "control").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    std::string junk = "frobnicate\n\x01\x02\xff\xfe\n";
    junk += "signal NOSUCHSIG\n";
    junk += "exit now please\n";  // exit takes no argument: refused, not obeyed
    ASSERT_EQ(::write(fd.get(), junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
    std::string longline(10000, 'z');  // longer than a command may be
    longline += "\nsend still-alive\n";
    ASSERT_EQ(::write(fd.get(), longline.data(), longline.size()),
              static_cast<ssize_t>(longline.size()));
  }
  EXPECT_TRUE(log_shows(id, "received: still-alive")) << log_of(id);
  auto log = log_of(id);
  EXPECT_NE(log.find("unknown command: \"frobnicate\""), std::string::npos) << log;
  EXPECT_NE(log.find("\\x01\\x02\\xff\\xfe"), std::string::npos) << log;
  EXPECT_NE(log.find("unknown signal"), std::string::npos) << log;
  EXPECT_NE(log.find("line longer than"), std::string::npos) << log;
  auto s = status(id);
  EXPECT_EQ(s["pid"], pid);  // the worker was never touched
  EXPECT_EQ(s["state"], "up");
}

TEST_F(Supervise, AFloodOfCommandsLeavesMemoryAndLogBounded) {
  std::string id = open({"--log-size", "65536", "--log-keep", "2"});
  auto s = status(id);
  int sup = s["supervisor_pid"], pid = s["pid"];
  // 100,000 commands from another process, as fast as the FIFO takes them.
  auto writer = must(tether::fork([&] {
    tether::Fd fd(::open((dir_ / id / "control").c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return 1;
    std::string batch;
    for (int i = 0; i < 100; ++i) batch += "bogus\n";
    for (int i = 0; i < 1000; ++i) {
      if (!tether::write_some(fd.get(), std::as_bytes(std::span(batch)), "flood")) return 2;
    }
    const char done[] = "send after-the-flood\n";
    return tether::write_some(fd.get(), std::as_bytes(std::span(done, sizeof done - 1)), "flood")
               ? 0
               : 3;
  }));
  EXPECT_TRUE(must(writer.wait(60s)).success());
  EXPECT_TRUE(log_shows(id, "received: after-the-flood")) << log_of(id).substr(0, 2000);
  // Rate-limited logging: the flood is summarized, not copied.
  EXPECT_NE(log_of(id).find("more bad commands ignored"), std::string::npos);
  std::uintmax_t total = 0;
  for (const auto& e : fs::directory_iterator(dir_ / id)) {
    if (e.path().filename().string().starts_with("worker.log")) total += e.file_size();
  }
  EXPECT_LE(total, 3u * 65536u + 4096u);
  std::ifstream st("/proc/" + std::to_string(sup) + "/status");
  std::string line;
  long rss_kib = -1;
  while (std::getline(st, line)) {
    if (line.starts_with("VmHWM:")) rss_kib = std::stol(line.substr(6));
  }
  EXPECT_GT(rss_kib, 0);
  EXPECT_LT(rss_kib, 64 * 1024) << "supervisor peak RSS " << rss_kib << " KiB";
  EXPECT_EQ(status(id)["pid"], pid);
}

TEST_F(Supervise, AKilledWorkerIsRestartedAndEveryExitIsRecorded) {
  std::string id = open({"--restart", "always", "--", "sleep", "1000"});
  auto s = status(id);
  int pid = s["pid"];
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  auto dir = must(tether::StateDir::open(dir_, false));
  auto w = must(tether::find_worker(dir, id));
  auto now = must(tether::wait_worker_state(w, tether::WorkerState::up, 20s, pid));
  EXPECT_NE(now.pid, pid);
  EXPECT_EQ(now.restarts, 1);
  EXPECT_EQ(now.last_exit_signal, SIGKILL);
  EXPECT_TRUE(log_shows(id, "killed by SIGKILL"));
}

TEST_F(Supervise, RestartPolicyOnFailureAndNeverAndTheBackoff) {
  // on-failure: a clean exit stays down ("exited").
  std::string ok = open({"--", "sh", "-c", "sleep 0.1; exit 0"});
  auto dir = must(tether::StateDir::open(dir_, false));
  auto w = must(tether::wait_worker_state(must(tether::find_worker(dir, ok)),
                                          tether::WorkerState::exited, 20s));
  EXPECT_EQ(w.last_exit_code, 0);
  EXPECT_EQ(w.restarts, 0);
  // A crash loop: restarted with backoff until --max-restarts.
  std::string bad = open({"--max-restarts", "3", "--", "sh", "-c", "sleep 0.05; exit 3"});
  auto b = must(tether::wait_worker_state(must(tether::find_worker(dir, bad)),
                                          tether::WorkerState::exited, 30s));
  EXPECT_EQ(b.restarts, 3);
  EXPECT_EQ(b.last_exit_code, 3);
  // The state is published before the line that says why is logged: wait
  // for the line.
  EXPECT_TRUE(log_shows(bad, "not restarting: 3 restarts")) << log_of(bad);
  auto log = log_of(bad);
  EXPECT_NE(log.find("restarting in 100 ms"), std::string::npos) << log;
  EXPECT_NE(log.find("restarting in 200 ms"), std::string::npos) << log;
  EXPECT_NE(log.find("restarting in 400 ms"), std::string::npos) << log;
  EXPECT_NE(log.find("not restarting: 3 restarts"), std::string::npos) << log;
}

TEST_F(Supervise, StopStartRestartKeepTheSupervisor) {
  std::string id = open({"--", "sleep", "1000"});
  auto s = status(id);
  int sup = s["supervisor_pid"], pid = s["pid"];
  auto stop = cli("stop", {id});
  ASSERT_EQ(stop.code, 0) << stop.err;
  EXPECT_EQ(status(id)["state"], "down");
  EXPECT_EQ(status(id)["last_exit"]["signal"], SIGTERM);
  auto start = cli("start", {id});
  ASSERT_EQ(start.code, 0) << start.err;
  int pid2 = status(id)["pid"];
  EXPECT_NE(pid2, pid);
  auto restart = cli("restart", {id});
  ASSERT_EQ(restart.code, 0) << restart.err;
  auto after = status(id);
  EXPECT_EQ(after["state"], "up");
  EXPECT_NE(after["pid"], pid2);
  EXPECT_EQ(after["supervisor_pid"], sup);
}

TEST_F(Supervise, StoppingKillsTheWholeTreeAndIgnoringTermMeansKill) {
  // The worker ignores SIGTERM and has a child in its group: after the
  // grace period both get SIGKILL; nothing survives.
  std::string id = open({"--grace", "0.3", "--", "sh", "-c",
                         "trap '' TERM; sleep 1000 & echo \"child is $!\"; wait"});
  ASSERT_TRUE(log_shows(id, "Z child is "));  // the worker's line, not the command's
  auto log = log_of(id);
  int child = std::stoi(log.substr(log.find("Z child is ") + 11));
  auto child_fd = pidfd(child);
  ASSERT_TRUE(child_fd.valid());
  auto stop = cli("stop", {id});
  ASSERT_EQ(stop.code, 0) << stop.err;
  EXPECT_TRUE(ends_within(child_fd, 10s));
  EXPECT_TRUE(log_shows(id, "still running 300 ms after SIGTERM: SIGKILL"));
  EXPECT_EQ(status(id)["last_exit"]["signal"], SIGKILL);
}

// A descendant that left the worker's process group (setsid) is not spared.
TEST_F(Supervise, StoppingKillsDescendantsThatLeftTheGroup) {
  std::string id = open({"--", "sh", "-c", "setsid sleep 1000 & echo \"escaped $!\"; wait"});
  ASSERT_TRUE(log_shows(id, "Z escaped "));
  auto log = log_of(id);
  int escaped = std::stoi(log.substr(log.find("Z escaped ") + 10));
  auto fd = pidfd(escaped);
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(cli("stop", {id}).code, 0);
  EXPECT_TRUE(ends_within(fd, 10s));
  EXPECT_TRUE(log_shows(id, "leftover process"));
}

TEST_F(Supervise, AKilledSupervisorLeavesNoDuplicateAndIsReportedThenPruned) {
  std::string id = open({"--restart", "always", "--", "sh", "-c", "sleep 1000 & wait"});
  auto s = status(id);
  auto worker = pidfd(s["pid"]);
  ASSERT_EQ(::kill(s["supervisor_pid"].get<int>(), SIGKILL), 0);
  EXPECT_TRUE(ends_within(worker, 10s));  // it stopped with its supervisor
  auto l = json::parse(cli("list", {"--json"}).out);
  ASSERT_EQ(l["workers"].size(), 1u);
  EXPECT_EQ(l["workers"][0]["state"], "dead-supervisor");
  EXPECT_TRUE(l["pids"].empty());
  auto send = cli("send", {id, "x"});
  EXPECT_EQ(send.code, 4);
  EXPECT_NE(send.err.find("is not running: its supervisor is not listening"), std::string::npos)
      << send.err;
  auto p = cli("list", {"--prune"});
  EXPECT_EQ(p.code, 0);
  EXPECT_FALSE(fs::exists(dir_ / id));
}

TEST_F(Supervise, AShellIsAClientAndSighupIsIgnored) {
  std::string id = open({});
  auto s = status(id);
  auto sup = pidfd(s["supervisor_pid"]);
  ASSERT_EQ(::kill(s["supervisor_pid"].get<int>(), SIGHUP), 0);  // a terminal closing
  EXPECT_TRUE(log_shows(id, "got SIGHUP: ignored"));
  auto sh =
      tether::Command("sh")
          .args({"-c", "echo 'send from a shell' > \"$0\"/control && echo exit > \"$0\"/control",
                 (dir_ / id).string()})
          .status(20s);
  ASSERT_TRUE(sh && sh->success());
  EXPECT_TRUE(ends_within(sup, 20s));
  EXPECT_FALSE(fs::exists(dir_ / id));
}

TEST_F(Supervise, ASupervisorWhoseDirectoryIsRemovedStopsItsWorkerAndExits) {
  std::string id = open({"--", "sleep", "1000"});
  auto s = status(id);
  auto sup = pidfd(s["supervisor_pid"]), worker = pidfd(s["pid"]);
  std::error_code ec;
  fs::remove_all(dir_ / id, ec);  // nobody could reach it any more
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(ends_within(worker, 20s));
  EXPECT_TRUE(ends_within(sup, 20s));
}

TEST_F(Supervise, TwoClientsExitingTheSameWorkerAtOnce) {
  std::string id = open({"--", "sleep", "1000"});
  tether::Command a(TETHER_CLI), b(TETHER_CLI);
  a.args({"exit", id}).env("TETHER_DIR", dir_.string()).stdout_to(tether::Stdio::null());
  b.args({"exit", id}).env("TETHER_DIR", dir_.string()).stdout_to(tether::Stdio::null());
  auto pa = must(a.stderr_to(tether::Stdio::null()).spawn());
  auto pb = must(b.stderr_to(tether::Stdio::null()).spawn());
  auto sa = must(pa.wait(30s)), sb = must(pb.wait(30s));
  // Each either stopped it or found it already gone (3: no such worker).
  EXPECT_TRUE(sa.code() == 0 || sa.code() == 3) << sa.describe();
  EXPECT_TRUE(sb.code() == 0 || sb.code() == 3) << sb.describe();
  EXPECT_TRUE(sa.code() == 0 || sb.code() == 0);
  EXPECT_FALSE(fs::exists(dir_ / id));
}

// More workers than fs.inotify.max_user_instances (128 by default): a
// supervisor must not hold a per-user-limited object of its own.
TEST_F(Supervise, ManyWorkersOpenedAndExitedLeaveNothing) {
  auto r = cli("open", {"--count", "150", "--name", "many", "--json", "--", "sleep", "1000"});
  ASSERT_EQ(r.code, 0) << r.err.substr(0, 2000);
  auto started = json::parse(r.out);
  std::vector<std::pair<std::string, int>> opened;
  for (const auto& w : started) opened.emplace_back(w["id"], w["supervisor_pid"].get<int>());
  for (int i = 0; i < 10; ++i) {  // and one at a time
    auto id = open({"--", "sleep", "1000"});
    opened.emplace_back(id, status(id)["supervisor_pid"].get<int>());
  }
  EXPECT_EQ(json::parse(cli("list", {"--json"}).out)["workers"].size(), 160u);
  std::vector<tether::Fd> sups;
  sups.reserve(opened.size());
  for (auto& [id, sup] : opened) sups.push_back(pidfd(sup));
  for (auto& [id, sup] : opened) ASSERT_EQ(cli("exit", {id}).code, 0);
  for (std::size_t i = 0; i < sups.size(); ++i) {
    EXPECT_TRUE(sups[i].valid() && ends_within(sups[i], tether::Deadline::immediate()))
        << "supervisor " << i << " (pid " << opened[i].second << ", fd " << sups[i].get() << ")";
  }
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(Supervise, TheLogRotatesBySizeKeepingNFiles) {
  // The script is one argument of sh -c, in pieces (parenthesised: one literal).
  std::string id = open({"--log-size", "4096", "--log-keep", "2", "--", "sh", "-c",
                         ("i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); done; "
                          "exec sleep 1000")});
  ASSERT_TRUE(log_shows(id, "line 399"));
  EXPECT_TRUE(fs::exists(dir_ / id / "worker.log.1"));
  EXPECT_TRUE(fs::exists(dir_ / id / "worker.log.2"));
  EXPECT_FALSE(fs::exists(dir_ / id / "worker.log.3"));
  EXPECT_LE(fs::file_size(dir_ / id / "worker.log"), 4096u);
  auto logs = cli("logs", {id, "-n", "1"});
  EXPECT_NE(logs.out.find("line 399"), std::string::npos) << logs.out;
}

// logs -f prints what comes, through rotations, and ends with the worker.
TEST_F(Supervise, LogsFollowPrintsNewLinesAndEndsWhenTheWorkerExits) {
  std::string id = open({"--log-size", "4096", "--log-keep", "3"});
  tether::Command follow(TETHER_CLI);
  follow.args({"logs", id, "-f", "-n", "-1"}).env("TETHER_DIR", dir_.string());
  auto p = must(follow.stdout_to(tether::Stdio::pipe()).stderr_to(tether::Stdio::null()).spawn());
  tether::PipeReader out(std::move(p.stdout_fd()));
  std::string seen;
  auto read_until = [&](const std::string& text) {
    return tether_test::read_until(out, seen, text);
  };
  // Once it shows a first line, it is following (-n -1: what was written
  // before it opened the log is printed from the file).
  ASSERT_EQ(cli("send", {id, "first"}).code, 0);
  ASSERT_TRUE(read_until("received: first")) << seen;
  // Enough lines to rotate the 4 KiB log several times while it follows
  // (fewer than the kept files hold: a follower that lags loses nothing).
  for (int i = 0; i < 60; ++i) {
    ASSERT_EQ(cli("send", {id, "line-" + std::to_string(i) + std::string(60, '.')}).code, 0);
  }
  EXPECT_TRUE(read_until("received: line-59")) << seen.substr(0, 500);
  for (int i = 0; i < 60; ++i) {  // none lost across the rotations
    EXPECT_NE(seen.find("received: line-" + std::to_string(i) + "."), std::string::npos) << i;
  }
  ASSERT_EQ(cli("exit", {id}).code, 0);
  auto st = p.wait(20s);  // it ends by itself
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_TRUE(st->success());
}

TEST_F(Supervise, EnvironmentAndWorkingDirectory) {
  std::string id = open({"--env", "GREETING=bonjour", "--cwd", "/tmp", "--", "sh", "-c",
                         "echo $GREETING in $(pwd) as $TETHER_WORKER_NAME; exec sleep 1000"});
  EXPECT_TRUE(log_shows(id, "bonjour in /tmp as sh")) << log_of(id);
  EXPECT_EQ(cli("open", {"--env", "NOEQUALS"}).code, 2);
}

TEST_F(Supervise, RunitAndDaemontoolsClientsWork) {
  if (!fs::exists("/usr/bin/sv") || !fs::exists("/usr/bin/svok")) {
    GTEST_SKIP() << "runit's sv and daemontools' svok are not installed";
  }
  std::string id = open({"--", "sleep", "1000"});
  std::string d = (dir_ / id).string();
  auto sv = [&](const std::vector<std::string>& args) {
    auto o = tether::Command("sv").args(args).output({}, 20s);
    return o ? o->out + o->err : o.error().message();
  };
  int pid = status(id)["pid"];
  EXPECT_NE(sv({"status", d}).find("run: " + d + ": (pid " + std::to_string(pid) + ")"),
            std::string::npos)
      << sv({"status", d});
  EXPECT_TRUE(must(tether::Command("svok").arg(d).status(20s)).success());
  sv({"down", d});
  auto dir = must(tether::StateDir::open(dir_, false));
  must(tether::wait_worker_state(must(tether::find_worker(dir, id)), tether::WorkerState::down,
                                 20s));
  EXPECT_NE(sv({"status", d}).find("down: " + d), std::string::npos) << sv({"status", d});
  auto svstat = must(tether::Command("svstat").arg(d).output({}, 20s));
  EXPECT_NE(svstat.out.find(": down"), std::string::npos) << svstat.out;
  must(tether::Command("svc").args({"-u", d}).status(20s));
  must(tether::wait_worker_state(must(tether::find_worker(dir, id)), tether::WorkerState::up, 20s));
  auto sup = pidfd(status(id)["supervisor_pid"]);
  sv({"exit", d});
  EXPECT_TRUE(ends_within(sup, 20s));
  EXPECT_FALSE(must(tether::Command("svok").arg(d).status(20s)).success());
}

TEST_F(Supervise, AnotherUserCannotListOrControlOurWorkers) {
  if (::geteuid() != 0 || !fs::exists("/usr/bin/setpriv")) GTEST_SKIP() << "needs root and setpriv";
  std::string id = open({"--", "sleep", "1000"});
  auto as_nobody = [&](const std::vector<std::string>& args) {
    tether::Command c("setpriv");
    c.args({"--reuid=nobody", "--regid=nogroup", "--clear-groups", TETHER_CLI});
    c.args(args).env("TETHER_DIR", dir_.string());
    return must(c.output({}, 20s));
  };
  auto l = as_nobody({"list"});
  EXPECT_EQ(l.status.code(), 1);
  EXPECT_NE(l.err.find("owned by uid 0, not by you"), std::string::npos) << l.err;
  auto e = as_nobody({"exit", id});
  EXPECT_EQ(e.status.code(), 1);  // refused with a message, not a crash
  EXPECT_NE(e.err.find("owned by uid 0, not by you"), std::string::npos) << e.err;
  auto echo = tether::Command("setpriv")
                  .args({"--reuid=nobody", "--regid=nogroup", "--clear-groups", "sh", "-c",
                         "echo exit > \"$0\"", (dir_ / id / "control").string()})
                  .stderr_to(tether::Stdio::null())
                  .status(20s);
  EXPECT_FALSE(must(std::move(echo)).success());
  EXPECT_EQ(status(id)["state"], "up");
}

// The library's refusals: each with its error and the worker untouched.
TEST_F(Supervise, BadCommandsTimeoutsAndPruningALiveWorkerAreRefused) {
  std::string id = open({"--", "sleep", "1000"});
  auto dir = must(tether::StateDir::open(dir_, false));
  auto w = must(tether::find_worker(dir, id));
  EXPECT_EQ(w.log_path(), dir_ / id / "worker.log");
  auto too_long = tether::send_command(w, "send " + std::string(5000, 'x'));
  ASSERT_FALSE(too_long);
  TT_EXPECT_ERROR(too_long, std::errc::invalid_argument);
  EXPECT_NE(too_long.error().message().find("one line of less than 4096 bytes"), std::string::npos);
  auto two_lines = tether::send_command(w, "send a\nexit");  // would smuggle a second command
  ASSERT_FALSE(two_lines);
  TT_EXPECT_ERROR(two_lines, std::errc::invalid_argument);
  auto waited = tether::wait_worker_state(w, tether::WorkerState::down, 100ms);
  ASSERT_FALSE(waited);
  TT_EXPECT_ERROR(waited, std::errc::timed_out);
  EXPECT_NE(waited.error().message().find("to be down (it is up)"), std::string::npos)
      << waited.error().message();
  auto pruned = tether::prune_worker(w);
  ASSERT_FALSE(pruned);
  TT_EXPECT_ERROR(pruned, std::errc::device_or_resource_busy);
  EXPECT_NE(pruned.error().message().find("is running"), std::string::npos);
  auto now = status(id);
  EXPECT_EQ(now["state"], "up");
  EXPECT_EQ(now["pid"], w.pid);
}

TEST_F(Supervise, TheStateDirectoryIsVerified) {
  fs::path link = dir_.string() + "-link";
  fs::create_directory_symlink(dir_, link);
  auto r = tether::StateDir::open(link, false);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("symbolic link"), std::string::npos);
  fs::remove(link);
  fs::path open_dir = dir_.string() + "-open";
  ASSERT_EQ(::mkdir(open_dir.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(open_dir.c_str(), 0755), 0);
  auto o = tether::StateDir::open(open_dir, false);
  ASSERT_FALSE(o);
  EXPECT_NE(o.error().message().find("lets other users in"), std::string::npos);
  fs::remove(open_dir);
  auto made = must(tether::StateDir::open(dir_ / "sub", true));
  struct stat st {};
  ASSERT_EQ(::stat(made.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  fs::remove(made.path());
}

// The worker's side, without a supervisor: lines from a pipe.
TEST_F(Clean, WorkerInboxBlockingAndPolling) {
  auto p = must(tether::Pipe::create());
  tether::WorkerInbox inbox(p.reader.fd());
  auto none = must(inbox.poll(20ms));
  EXPECT_FALSE(none.has_value());
  TT_ASSERT_OK(p.writer.write_all(tether_test::bytes("one\ntwo\npart")));
  EXPECT_EQ(must(inbox.next(5s)), "one");
  EXPECT_EQ(must(inbox.poll(5s)).value_or(""), "two");
  EXPECT_FALSE(must(inbox.poll(20ms)).has_value());  // "part" has no newline yet
  TT_ASSERT_OK(p.writer.close());
  EXPECT_EQ(must(inbox.next(5s)), "part");
  TT_EXPECT_ERROR(inbox.next(5s), tether::errc::end_of_stream);
}

// ---------------------------------------------------------------- the holes a hostile try found

namespace {

// A worker directory as a dead supervisor would leave it: no lock held,
// and whatever status.json the test writes.
void fake_worker(const fs::path& state, const std::string& id, const std::string& status_json) {
  fs::create_directory(state / id);
  ::chmod((state / id).c_str(), 0700);
  std::ofstream(state / id / "lock") << "";
  std::ofstream(state / id / "status.json") << status_json;
}

bool alive(const tether::Fd& pidfd) {
  return !ends_within(pidfd, tether::Deadline::immediate());
}

}  // namespace

TEST_F(Supervise, StopNoWaitThenStartIsNotLostWhenTheWorkerTakesAMomentToExit) {
  // --restart never, a worker that takes 300 ms to exit 0 on TERM.
  std::string id = open({"--restart", "never", "--", "sh", "-c",
                         "trap 'sleep 0.3; exit 0' TERM; while :; do sleep 0.05; done"});
  int pid = status(id)["pid"];
  ASSERT_EQ(cli("stop", {id, "--no-wait"}).code, 0);
  auto start = cli("start", {id});
  ASSERT_EQ(start.code, 0) << start.err;
  auto s = status(id);
  EXPECT_EQ(s["state"], "up");
  EXPECT_EQ(s["want"], "up");
  EXPECT_NE(s["pid"], pid);
}

// A client waits for the effect of its own command, not for a state the
// worker was in before the supervisor read it: with the supervisor stopped,
// another client's stop and then our start wait in the FIFO, and `start`
// must not return "up" (the old state) until both have been acted on.
TEST_F(Supervise, StartWaitsForItsOwnCommandNotAnEarlierState) {
  std::string id = open({"--", "sleep", "1000"});
  auto before = status(id);
  int pid = before["pid"];
  int sup = before["supervisor_pid"];
  ASSERT_EQ(::kill(sup, SIGSTOP), 0);
  ASSERT_EQ(cli("stop", {id, "--no-wait"}).code, 0);  // queued in the FIFO
  tether::Command start(TETHER_CLI);
  start.args({"start", id}).env("TETHER_DIR", dir_.string());
  auto p = must(start.stdout_to(tether::Stdio::pipe()).stderr_to(tether::Stdio::null()).spawn());
  // While the supervisor acts on nothing, `start` has nothing to report.
  auto early = p.wait(300ms);
  EXPECT_FALSE(early.has_value()) << "start returned before its command was acted on";
  ASSERT_EQ(::kill(sup, SIGCONT), 0);
  auto st = p.wait(20s);
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_TRUE(st->success());
  auto after = status(id);
  EXPECT_EQ(after["state"], "up");
  EXPECT_NE(after["pid"], pid);  // stopped, then started again
  EXPECT_GE(after["commands"].get<std::uint64_t>(), before["commands"].get<std::uint64_t>() + 2);
}

TEST_F(Supervise, AStateDirectoryUnderAnotherUsersDirectoryIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (to make a directory of nobody's)";
  fs::path theirs = dir_.string() + "-theirs";
  ASSERT_EQ(::mkdir(theirs.c_str(), 0755), 0);
  ASSERT_EQ(::chown(theirs.c_str(), 65534, 65534), 0);
  tether::Command c(TETHER_CLI);
  c.args({"list"}).env("TETHER_DIR", (theirs / "sub").string());
  auto o = must(c.output({}, 20s));
  EXPECT_EQ(o.status.code(), 1);
  EXPECT_NE(o.err.find("belongs to uid 65534"), std::string::npos) << o.err;
  EXPECT_FALSE(fs::exists(theirs / "sub"));  // nothing made there
  // A world-writable ancestor that is not sticky: refused too.
  ASSERT_EQ(::chown(theirs.c_str(), 0, 0), 0);
  ASSERT_EQ(::chmod(theirs.c_str(), 0777), 0);
  auto w = must(c.output({}, 20s));
  EXPECT_EQ(w.status.code(), 1);
  EXPECT_NE(w.err.find("writable by others"), std::string::npos) << w.err;
  fs::remove_all(theirs);
}

TEST_F(Supervise, PruneNeverSignalsARecycledPidOrPidOne) {
  // A process group leader of ours that a dead worker's record names: as
  // if its pid had been recycled. Prune must leave it alone.
  auto leader = must(tether::Command("sleep").arg("1000").new_session().spawn());
  auto leader_fd = pidfd(leader.pid());
  fake_worker(dir_, "0badc0de",
              json({{"id", "0badc0de"},
                    {"name", "x"},
                    {"state", "up"},
                    {"want", "up"},
                    {"restart", "never"},
                    {"pid", leader.pid()},
                    {"pid_start", 1},
                    {"supervisor_pid", 999999}})
                  .dump());
  fake_worker(dir_, "0badc0df",
              json({{"id", "0badc0df"},
                    {"name", "y"},
                    {"state", "up"},
                    {"want", "up"},
                    {"restart", "never"},
                    {"pid", 1},
                    {"supervisor_pid", 999998}})
                  .dump());
  auto p = cli("list", {"--prune"});
  EXPECT_EQ(p.code, 0) << p.err;
  EXPECT_TRUE(alive(leader_fd));
  EXPECT_FALSE(fs::exists(dir_ / "0badc0de"));
  EXPECT_FALSE(fs::exists(dir_ / "0badc0df"));
  (void)leader.kill();
}

TEST_F(Supervise, PruneKillsWhatIsLeftOfTheWorkerItself) {
  // The worker's child stays in its group: PDEATHSIG kills only the worker,
  // so the child outlives a supervisor killed -9 until prune proves it is
  // the worker's (group, start time, TETHER_WORKER_ID) and kills it.
  std::string id = open({"--", "sh", "-c", "sleep 1000 & echo child=$!; wait"});
  // The log also holds the command line, "child=$!": wait for the line
  // the worker prints, "child=" and a digit.
  std::string log;
  std::size_t at = std::string::npos;
  for (int i = 0; i < 2000; ++i) {
    log = log_of(id);
    at = log.rfind("child=");
    if (at != std::string::npos && at + 6 < log.size() && std::isdigit(log[at + 6])) break;
    at = std::string::npos;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_NE(at, std::string::npos) << log;
  int child = std::stoi(log.substr(at + 6));
  ASSERT_GT(child, 1);
  auto child_fd = pidfd(child);
  auto s = status(id);
  auto worker = pidfd(s["pid"]);
  ASSERT_EQ(::kill(s["supervisor_pid"].get<int>(), SIGKILL), 0);
  EXPECT_TRUE(ends_within(worker, 10s));
  EXPECT_TRUE(alive(child_fd));
  auto p = cli("list", {"--prune"});
  EXPECT_EQ(p.code, 0) << p.err;
  EXPECT_TRUE(ends_within(child_fd, 10s));
  EXPECT_FALSE(fs::exists(dir_ / id));
}

TEST_F(Supervise, EnvironmentValuesAreNeverOnACommandLine) {
  auto r =
      cli("open", {"--count", "2", "--env", "SECRET=hunter2-xyz", "--json", "--", "sleep", "1000"});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const auto& w : json::parse(r.out)) {
    std::ifstream in("/proc/" + std::to_string(w["supervisor_pid"].get<int>()) + "/cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(cmdline.find("hunter2"), std::string::npos) << cmdline;
    // The worker has it. (Its environ reads empty for a moment: a vfork
    // parent resumes once exec has the new memory, before the kernel has
    // set where the environment lies in it.)
    std::string e;
    for (int i = 0; i < 2000 && e.empty(); ++i) {
      if (i > 0) std::this_thread::sleep_for(10ms);
      std::ifstream env("/proc/" + std::to_string(w["pid"].get<int>()) + "/environ");
      e.assign(std::istreambuf_iterator<char>(env), {});
    }
    EXPECT_NE(e.find("SECRET=hunter2-xyz"), std::string::npos) << e.size();
  }
}

TEST_F(Supervise, AMalformedRecordIsReportedAndSkipped) {
  std::string id = open({"--", "sleep", "1000"});
  fake_worker(dir_, "deadbeef", R"({"id":"deadbeef","pid":"oops"})");
  fake_worker(dir_, "deadbef0", R"([1,2,3])");
  fake_worker(
      dir_, "deadbef1",
      R"({"id":"deadbef1","state":"up","want":"up","restart":"never","last_exit":{"code":"x"}})");
  for (const auto& args : {std::vector<std::string>{}, std::vector<std::string>{"--json"}}) {
    auto l = cli("list", args);
    EXPECT_EQ(l.code, 0) << l.err;
    EXPECT_NE(l.err.find("skipped"), std::string::npos) << l.err;
    EXPECT_NE(l.err.find("deadbeef/status.json"), std::string::npos) << l.err;
    EXPECT_NE(l.out.find(id), std::string::npos);
  }
  EXPECT_EQ(cli("status", {id}).code, 0);
  EXPECT_EQ(cli("exit", {"deadbeef"}).code, 4);  // listed as dead, not running
  EXPECT_EQ(cli("list", {"--prune"}).code, 0);
  EXPECT_FALSE(fs::exists(dir_ / "deadbeef"));
}

TEST_F(Supervise, APartialLineDoesNotPoisonTheNextCommand) {
  std::string id = open({"--", "sleep", "1000"});
  {
    tether::Fd fd(::open((dir_ / id / "control").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(::write(fd.get(), "exit", 4), 4);  // printf exit: no newline
  }
  EXPECT_TRUE(log_shows(id, "incomplete command (no newline) discarded"));
  auto stop = cli("stop", {id});
  EXPECT_EQ(stop.code, 0) << stop.err << log_of(id);
  EXPECT_EQ(status(id)["state"], "down");
}

TEST_F(Supervise, AMovedWorkerDirectoryIsNoticed) {
  std::string id = open({"--check-interval", "0.1", "--", "sleep", "1000"});
  auto s = status(id);
  auto sup = pidfd(s["supervisor_pid"]), worker = pidfd(s["pid"]);
  fs::path moved = dir_.string() + "-moved";
  fs::rename(dir_ / id, moved);
  EXPECT_TRUE(ends_within(worker, 20s));
  EXPECT_TRUE(ends_within(sup, 20s));
  fs::remove_all(moved);
}

TEST_F(Supervise, AControlFifoReplacedByAFileIsTheDirectoryLost) {
  std::string id = open({"--", "sleep", "1000"});
  auto s = status(id);
  auto sup = pidfd(s["supervisor_pid"]);
  fs::remove(dir_ / id / "control");
  std::ofstream(dir_ / id / "control") << "not a fifo";
  EXPECT_TRUE(ends_within(sup, 20s));
  fs::remove_all(dir_ / id);
}

TEST_F(Supervise, AFifoPlantedAsALockOrRecordDoesNotHangAClient) {
  fs::create_directory(dir_ / "feedface");
  ::chmod((dir_ / "feedface").c_str(), 0700);
  ASSERT_EQ(::mkfifo((dir_ / "feedface" / "lock").c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo((dir_ / "feedface" / "status.json").c_str(), 0600), 0);
  auto l = cli("list", {}, 20s);
  EXPECT_EQ(l.code, 0) << l.err;
  EXPECT_NE(l.err.find("not a regular file"), std::string::npos) << l.err;
  EXPECT_EQ(cli("list", {"--prune"}, 20s).code, 0);
  EXPECT_FALSE(fs::exists(dir_ / "feedface"));
}

TEST_F(Supervise, ManyBadWritersGetOneSummaryASecond) {
  std::string id = open({});
  auto started = std::chrono::steady_clock::now();
  // 2,000 writers of one bad command each, from 4 processes.
  std::vector<tether::Process> writers;
  writers.reserve(4);
  for (int p = 0; p < 4; ++p) {
    writers.push_back(must(tether::fork([&] {
      for (int i = 0; i < 500; ++i) {
        tether::Fd fd(::open((dir_ / id / "control").c_str(), O_WRONLY | O_CLOEXEC));
        if (!fd || ::write(fd.get(), "bogus\n", 6) != 6) return 1;
      }
      return 0;
    })));
  }
  for (auto& w : writers) EXPECT_TRUE(must(w.wait(60s)).success());
  ASSERT_EQ(cli("send", {id, "done"}).code, 0);
  EXPECT_TRUE(log_shows(id, "received: done"));
  auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started)
          .count();
  auto log = log_of(id);
  int summaries = 0, logged = 0;
  for (std::size_t at = 0; (at = log.find("more bad commands ignored", at)) != std::string::npos;
       ++at) {
    ++summaries;
  }
  for (std::size_t at = 0; (at = log.find("bad command ignored", at)) != std::string::npos; ++at) {
    ++logged;
  }
  EXPECT_LE(summaries, seconds + 2) << log.substr(0, 3000);
  EXPECT_LE(logged, 10 * (seconds + 2));
}

TEST_F(Supervise, NamesAreClaimedOnceAndAmbiguousNamesRefused) {
  ASSERT_EQ(cli("open", {"--count", "2", "--name", "web", "--", "sleep", "1000"}).code, 0);
  auto again = cli("open", {"--count", "2", "--name", "web", "--", "sleep", "1000"});
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("already running"), std::string::npos) << again.err;
  // Ten at once with the same name: exactly one wins.
  std::vector<tether::Process> opens;
  for (int i = 0; i < 10; ++i) {
    tether::Command c(TETHER_CLI);
    c.args({"open", "--name", "same", "--", "sleep", "1000"}).env("TETHER_DIR", dir_.string());
    opens.push_back(
        must(c.stdout_to(tether::Stdio::null()).stderr_to(tether::Stdio::null()).spawn()));
  }
  int won = 0;
  for (auto& p : opens) won += must(p.wait(60s)).success() ? 1 : 0;
  EXPECT_EQ(won, 1);
  // Names that would read as an id, a pid, or carry control characters.
  EXPECT_EQ(cli("open", {"--name", "deadbeef"}).code, 2);
  EXPECT_EQ(cli("open", {"--name", ""}).code, 2);
  EXPECT_EQ(cli("open", {"--name", "a\nb"}).code, 2);
  EXPECT_EQ(cli("open", {"--name", "\x1b[31mred"}).code, 2);
  EXPECT_EQ(cli("open", {"--name", std::string(65, 'a')}).code, 2);
  // Default names may repeat; addressing them by name is then refused.
  open({"--", "sleep", "1000"});
  open({"--", "sleep", "1000"});
  auto ambiguous = cli("exit", {"sleep"});
  EXPECT_EQ(ambiguous.code, 1);
  EXPECT_NE(ambiguous.err.find("2 live workers are named 'sleep'"), std::string::npos)
      << ambiguous.err;
}

TEST_F(Supervise, BadSignalsAndTimeoutsAreRefusedByTheClient) {
  std::string id = open({"--", "sh", "-c", "trap '' USR1; exec sleep 1000"});
  for (const char* bad : {"BOGUS", "0", "99", ""}) {
    EXPECT_EQ(cli("signal", {id, bad}).code, 2) << bad;
  }
  for (const char* t : {"0", "-1", "nan"}) {
    EXPECT_EQ(cli("stop", {id, "--timeout", t}).code, 2) << t;
    EXPECT_EQ(cli("exit", {id, "--timeout", t}).code, 2) << t;
  }
  EXPECT_EQ(cli("signal", {id, "sigusr1"}).code, 0);
  EXPECT_TRUE(log_shows(id, "command: signal SIGUSR1"));
  EXPECT_EQ(status(id)["state"], "up");
}

TEST_F(Supervise, LeftoversOfDeadStartsAndExitsArePruned) {
  for (const char* d : {".0badf00d.new", ".0badf00e.gone"}) {
    fs::create_directory(dir_ / d);
    std::ofstream(dir_ / d / "lock") << "";
  }
  fs::create_directory(dir_ / ".names");
  fs::create_directory_symlink("0badf00f", dir_ / ".names" / "ghost");
  auto p = cli("list", {"--prune"});
  EXPECT_EQ(p.code, 0) << p.err;
  EXPECT_FALSE(fs::exists(dir_ / ".0badf00d.new"));
  EXPECT_FALSE(fs::exists(dir_ / ".0badf00e.gone"));
  EXPECT_FALSE(fs::exists(fs::symlink_status(dir_ / ".names" / "ghost")));
}

TEST_F(Supervise, ARelativeStateDirectoryReachesWorkersAsAnAbsolutePath) {
  auto cwd = fs::current_path();
  fs::current_path(dir_.parent_path());
  tether::Command c(TETHER_CLI);
  c.args({"open", "--json", "--cwd", "/", "--", "sh", "-c",
          "echo dir=$TETHER_WORKER_DIR; exec sleep 1000"})
      .env("TETHER_DIR", dir_.filename().string());
  auto o = must(c.output({}, 20s));
  fs::current_path(cwd);
  ASSERT_TRUE(o.status.success()) << o.err;
  std::string id = json::parse(o.out)["id"];
  EXPECT_TRUE(log_shows(id, "dir=" + (dir_ / id).string())) << log_of(id);
}

TEST_F(Supervise, AFullDiskStillChangesTheStatus) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  fs::path small = dir_ / "small";
  fs::create_directory(small);
  if (::mount("tether-test", small.c_str(), "tmpfs", 0, "size=512k,mode=0700") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
  }
  auto unmount = [&] { ::umount2(small.c_str(), MNT_DETACH); };
  tether::Command c(TETHER_CLI);
  auto run = [&](const std::vector<std::string>& args) {
    tether::Command k(TETHER_CLI);
    k.args(args).env("TETHER_DIR", (small / "state").string());
    return must(k.output({}, 30s));
  };
  auto o = run({"open", "--json", "--", "sleep", "1000"});
  if (!o.status.success()) {
    unmount();
    FAIL() << o.err;
  }
  std::string id = json::parse(o.out)["id"];
  {  // fill the disk
    std::ofstream fill(small / "fill");
    std::string block(4096, 'x');
    while (fill.write(block.data(), static_cast<std::streamsize>(block.size()))) fill.flush();
  }
  auto stop = run({"stop", id});
  auto start = run({"start", id});
  auto st = run({"status", id, "--json"});
  auto exit = run({"exit", id});
  unmount();
  EXPECT_EQ(stop.status.code(), 0) << stop.err;
  EXPECT_EQ(start.status.code(), 0) << start.err;
  EXPECT_EQ(exit.status.code(), 0) << exit.err;
  ASSERT_TRUE(st.status.success()) << st.err;
  EXPECT_EQ(json::parse(st.out)["state"], "up");
  fs::remove_all(small);
}

TEST_F(Supervise, ATtyWorkerHasATerminalAndItsOutputArrivesLineByLine) {
  // Python block-buffers stdout on a pipe: "buffered" would never reach the
  // log while it sleeps. On a terminal it is line-buffered. The script is one
  // argument of sh -c, in pieces (parenthesised: one literal).
  std::string id = open({"--tty", "--", "sh", "-c",
                         ("test -t 0 && test -t 1 && echo on-a-tty; read line; echo got=$line; "
                          "exec python3 -c \"import time; print('buffered'); time.sleep(1000)\"")});
  EXPECT_TRUE(log_shows(id, "on-a-tty")) << log_of(id);
  ASSERT_EQ(cli("send", {id, "hi"}).code, 0);
  EXPECT_TRUE(log_shows(id, "got=hi")) << log_of(id);
  EXPECT_TRUE(log_shows(id, "buffered")) << log_of(id);
  auto log = log_of(id);
  EXPECT_EQ(log.find('\r'), std::string::npos);             // no "\r\n" in the log
  EXPECT_EQ(log.find("Z hi\n"), std::string::npos) << log;  // input not echoed
  ASSERT_EQ(cli("exit", {id}).code, 0);
}

TEST_F(Supervise, AnotherUserSquattingTheDefaultDirectoryIsSteppedAround) {
  if (::geteuid() != 0 || !fs::exists("/usr/bin/setpriv")) GTEST_SKIP() << "needs root and setpriv";
  // nobody's default state directory, taken first by root.
  fs::path squat = "/tmp/tether-65534";
  std::error_code ec;
  for (const char* s : {"", ".1", ".2", ".3"}) fs::remove_all(squat.string() + s, ec);
  ASSERT_EQ(::mkdir(squat.c_str(), 0700), 0);
  auto as_nobody = [&](const std::vector<std::string>& args) {
    tether::Command c("setpriv");
    c.args({"--reuid=nobody", "--regid=nogroup", "--clear-groups", TETHER_CLI});
    c.args(args).env_remove("TETHER_DIR").env_remove("XDG_RUNTIME_DIR").cwd("/");
    return must(c.output({}, 20s));
  };
  auto o = as_nobody({"open", "--json", "--", "sleep", "1000"});
  EXPECT_TRUE(o.status.success()) << o.err;
  auto l = as_nobody({"list", "--json"});
  EXPECT_TRUE(l.status.success()) << l.err;
  if (o.status.success()) {
    std::string id = json::parse(o.out)["id"];
    EXPECT_NE(l.out.find(id), std::string::npos);
    EXPECT_TRUE(fs::exists(squat.string() + ".1/" + id));
    EXPECT_TRUE(as_nobody({"exit", id}).status.success());
  }
  for (const char* s : {"", ".1"}) fs::remove_all(squat.string() + s, ec);
}

TEST_F(Supervise, EveryFileIsMadeWithExactlyItsModeWhateverTheUmask) {
  for (const char* mask : {"022", "077", "0", "0277"}) {
    tether::Command c("sh");
    c.args({"-c", std::string("umask ") + mask + "; exec \"$0\" open --json -- sleep 1000",
            TETHER_CLI})
        .env("TETHER_DIR", (dir_ / "state").string());
    auto o = must(c.output({}, 20s));
    ASSERT_TRUE(o.status.success()) << o.err;
    std::string id = json::parse(o.out)["id"];
    auto mode = [&](const fs::path& p) {
      struct stat st {};
      EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
      return st.st_mode & 07777;
    };
    fs::path w = dir_ / "state" / id;
    EXPECT_EQ(mode(dir_ / "state"), 0700u) << "umask " << mask;
    EXPECT_EQ(mode(w), 0700u) << "umask " << mask;
    for (const char* f : {"control", "lock", "status.json", "worker.log", "supervise/control",
                          "supervise/ok", "supervise/status"}) {
      EXPECT_EQ(mode(w / f), 0600u) << f << " under umask " << mask;
    }
    tether::Command x(TETHER_CLI);
    x.args({"exit", id}).env("TETHER_DIR", (dir_ / "state").string());
    EXPECT_TRUE(must(x.status(30s)).success());
    fs::remove(dir_ / "state");
  }
}

// Found by fuzz_cli: words that are not UTF-8 made `tether open` abort
// (exit 134) in the JSON encoder; out-of-range options passed the parser.
TEST_F(Supervise, OpenRefusesWordsThatAreNotUtf8AndOutOfRangeOptions) {
  EXPECT_EQ(cli("open", {"--env", "A=\xff", "--", "sleep", "1000"}).code, 2);
  EXPECT_EQ(cli("open", {"--", "sleep", "\xc3\x28"}).code, 2);
  EXPECT_EQ(cli("open", {"--cwd", "/", "--", "\xed\xa0\x80"}).code, 2);  // a surrogate
  auto r = cli("open", {"--env", "A=\xff", "--", "sleep", "1000"});
  EXPECT_NE(r.err.find("--env A is not valid UTF-8"), std::string::npos) << r.err;
  EXPECT_EQ(cli("open", {"--max-restarts", "-5", "--", "sleep", "1000"}).code, 2);
  EXPECT_EQ(cli("open", {"--max-restarts", "2000000000", "--", "sleep", "1000"}).code, 2);
  EXPECT_TRUE(fs::is_empty(dir_));
  // Valid UTF-8 that is not ASCII is fine.
  std::string id = open({"--env", "GREETING=héllo wörld", "--", "sleep", "1000"});
  EXPECT_EQ(status(id)["state"], "up");
}

// ---------------------------------------------------------------- sets (tether up)

// A set's file in a directory of its own (not the state directory, which
// must be left empty).
class Sets : public Supervise {
 protected:
  void SetUp() override {
    Supervise::SetUp();
    files_ = fs::temp_directory_path() / tether_test::unique_name("tether-set");
    ASSERT_EQ(::mkdir(files_.c_str(), 0700), 0);
  }
  void TearDown() override {
    Supervise::TearDown();
    std::error_code ec;
    fs::remove_all(files_, ec);
  }
  fs::path write(const std::string& text, const std::string& name = "tether.toml") {
    std::ofstream(files_ / name) << text;
    return files_ / name;
  }
  CliResult set_cli(const std::string& sub, std::vector<std::string> args = {}) {
    args.insert(args.begin(), {"-f", (files_ / "tether.toml").string()});
    return cli(sub, args);
  }
  // name -> pid of every live worker.
  std::map<std::string, int> pids() {
    auto l = cli("list", {"--json"});
    EXPECT_EQ(l.code, 0) << l.err;
    std::map<std::string, int> out;
    if (l.code != 0) return out;
    json all = json::parse(l.out);
    for (const auto& w : all["workers"]) out[w["name"].get<std::string>()] = w["pid"].get<int>();
    return out;
  }
  std::string order() {
    std::ifstream in(files_ / "order");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // A worker that says when it is up (then ready) and when it is told to go.
  std::string worker(const std::string& tag) {
    return fmt::format(
        "command = \"trap 'echo down-{0} >> {1}/order; exit 0' TERM; echo up-{0} >> {1}/order; "
        "echo ready >&3; while :; do sleep 0.05; done\"\nwait_ready = true\n",
        tag, files_.string());
  }
  fs::path files_;
};

TEST_F(Sets, AnAfterChainComesUpInOrderAndGoesDownInReverse) {
  write("name = \"shop\"\n[web]\n" + worker("web") + "count = 2\nafter = [\"api\"]\n[db]\n" +
        worker("db") + "[api]\n" + worker("api") + "after = \"db\"\n");
  auto up = set_cli("up");
  ASSERT_EQ(up.code, 0) << up.err << up.out;
  EXPECT_NE(up.out.find("set shop: 4 started"), std::string::npos) << up.out;
  EXPECT_EQ(order(), "up-db\nup-api\nup-web\nup-web\n");
  auto p = pids();
  EXPECT_EQ(p.size(), 4u);
  for (auto n : {"db", "api", "web-1", "web-2"}) EXPECT_GT(p[n], 0) << n;
  EXPECT_EQ(status("web-1")["set"], "shop");

  auto down = set_cli("down");
  ASSERT_EQ(down.code, 0) << down.err << down.out;
  std::string before = "up-db\nup-api\nup-web\nup-web\ndown-web\ndown-web\ndown-api\ndown-db\n";
  EXPECT_EQ(order(), before);
  EXPECT_TRUE(pids().empty());

  // A name brings what it comes after (db, then api), not what comes after it.
  auto named = set_cli("up", {"api"});
  ASSERT_EQ(named.code, 0) << named.err << named.out;
  EXPECT_EQ(order(), before + "up-db\nup-api\n");
  auto deps_up = pids();
  EXPECT_EQ(deps_up.size(), 2u);
  // What runs of a dependency is left as it is: up web starts the webs only.
  auto web = set_cli("up", {"web"});
  ASSERT_EQ(web.code, 0) << web.err << web.out;
  EXPECT_NE(web.out.find("left as it is: a dependency"), std::string::npos) << web.out;
  EXPECT_EQ(order(), before + "up-db\nup-api\nup-web\nup-web\n");
  p = pids();
  EXPECT_EQ(p["db"], deps_up["db"]);
  EXPECT_EQ(p["api"], deps_up["api"]);
  EXPECT_EQ(set_cli("up", {"--no-deps"}).code, 2);  // no names: nothing to leave out
  // --no-deps: the name alone.
  ASSERT_EQ(set_cli("down").code, 0);
  EXPECT_TRUE(pids().empty());
  before = order();
  auto alone = set_cli("up", {"--no-deps", "web"});
  ASSERT_EQ(alone.code, 0) << alone.err << alone.out;
  EXPECT_EQ(order(), before + "up-web\nup-web\n");
  p = pids();
  EXPECT_EQ(p.size(), 2u);
  EXPECT_TRUE(p.contains("web-1") && p.contains("web-2"));
  ASSERT_EQ(set_cli("down").code, 0);
}

TEST_F(Sets, UpTwiceChangesNothingAndAnEditedDefinitionRestartsOnlyItself) {
  std::string a = "[a]\ncommand = [\"sleep\", \"1000\"]\n";
  std::string b = "[b]\ncommand = \"exec sleep 1001\"\ncount = 2\n";
  write(a + b);
  ASSERT_EQ(set_cli("up").code, 0);
  auto before = pids();
  ASSERT_EQ(before.size(), 3u);
  auto again = set_cli("up");
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.out.find("0 started, 0 restarted, 3 unchanged, 0 exited"), std::string::npos)
      << again.out;
  EXPECT_EQ(pids(), before);
  // One taken down is started again by the next up, the others left alone.
  ASSERT_EQ(cli("stop", {"b-2"}).code, 0);
  auto restart = set_cli("up");
  ASSERT_EQ(restart.code, 0) << restart.err;
  EXPECT_NE(restart.out.find("1 started, 0 restarted, 2 unchanged"), std::string::npos)
      << restart.out;
  EXPECT_NE(restart.out.find("started: it was down"), std::string::npos) << restart.out;
  EXPECT_EQ(status("b-2")["state"], "up");
  before = pids();

  write("[a]\ncommand = [\"sleep\", \"1002\"]\n" + b);
  auto edited = set_cli("up");
  ASSERT_EQ(edited.code, 0) << edited.err;
  EXPECT_NE(edited.out.find("0 started, 1 restarted, 2 unchanged"), std::string::npos)
      << edited.out;
  auto after = pids();
  EXPECT_NE(after["a"], before["a"]);
  EXPECT_GT(after["a"], 0);
  EXPECT_EQ(after["b-1"], before["b-1"]);
  EXPECT_EQ(after["b-2"], before["b-2"]);
  EXPECT_EQ(status("a")["command"], (json{"sleep", "1002"}));

  // A definition removed from the file goes with the next whole `up`.
  write(b);
  ASSERT_EQ(set_cli("up").code, 0);
  after = pids();
  EXPECT_FALSE(after.contains("a"));
  EXPECT_EQ(after.size(), 2u);
}

// A worker of the set that ended and was not restarted (exited, its
// supervisor still holding the name) is started again by the next up.
TEST_F(Sets, UpStartsAgainAWorkerThatEndedAndWasNotRestarted) {
  auto go = files_ / "go";
  write(
      fmt::format("[job]\ncommand = \"test -e {} && exec sleep 1000; exit 3\"\n"
                  "restart = \"never\"\n",
                  go.string()));
  ASSERT_EQ(set_cli("up").code, 0);
  json st;
  for (int i = 0; i < 2000; ++i) {  // a bound against hanging, not a measurement
    st = status("job");
    if (st["state"] == "exited") break;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(st["state"], "exited") << st;
  { std::ofstream(go) << ""; }
  auto again = set_cli("up");
  ASSERT_EQ(again.code, 0) << again.err << again.out;
  EXPECT_NE(again.out.find("1 started"), std::string::npos) << again.out;
  EXPECT_EQ(status("job")["state"], "up");
  EXPECT_EQ(status("job")["id"], st["id"]) << "the same supervisor";
}

TEST_F(Sets, ScaleGrowsAndShrinksWithoutTouchingTheOthers) {
  write("[w]\ncommand = \"exec sleep 1000\"\ncount = 2\n[other]\ncommand = \"exec sleep 1000\"\n");
  ASSERT_EQ(set_cli("up").code, 0);
  auto before = pids();
  auto grow = set_cli("scale", {"w=4"});
  ASSERT_EQ(grow.code, 0) << grow.err;
  auto p = pids();
  EXPECT_EQ(p.size(), 5u);
  EXPECT_EQ(p["w-1"], before["w-1"]);
  EXPECT_EQ(p["w-2"], before["w-2"]);
  EXPECT_EQ(p["other"], before["other"]);
  EXPECT_GT(p["w-4"], 0);
  auto shrink = set_cli("scale", {"w=1"});
  ASSERT_EQ(shrink.code, 0) << shrink.err;
  p = pids();
  EXPECT_EQ(p.size(), 2u);
  EXPECT_TRUE(p.contains("w"));
  EXPECT_EQ(p["other"], before["other"]);
  EXPECT_EQ(set_cli("scale", {"w=x"}).code, 2);
  EXPECT_EQ(set_cli("scale", {"nosuch=2"}).code, 2);
  // down of one definition leaves the rest.
  ASSERT_EQ(set_cli("down", {"w"}).code, 0);
  p = pids();
  EXPECT_EQ(p.size(), 1u);
  EXPECT_EQ(p["other"], before["other"]);
}

TEST_F(Sets, EachBadFileGetsItsPlaceAndChangesNothing) {
  std::string good = "[a]\ncommand = \"exec sleep 1000\"\n[b]\ncommand = \"exec sleep 1000\"\n";
  write(good);
  ASSERT_EQ(set_cli("up").code, 0);
  auto before = pids();
  std::string file = (files_ / "tether.toml").string();
  struct Case {
    std::string text, message;
  };
  for (const auto& c : std::vector<Case>{
           {"[a]\ncommand = 'x'\nafter = 'b'\n[b]\ncommand = 'y'\nafter = 'a'\n",
            file + ":1:2: a cycle in after: a -> b -> a"},
           {"[a]\ncomand = 'x'\n",
            file + ":2:1: [a]: unknown key 'comand' (did you mean 'command'?)"},
           {"[a]\ncount = 2\n", file + ":1:2: [a]: no command"},
           {"[a]\ncommand = 'x'\n[b]\nname = 'a'\ncommand = 'y'\n",
            file + ":3:2: [b]: the name 'a' is also the name of [a]"},
           {"[a]\ncommand = 'x'\ncount = 0\n", file + ":3:9: [a]: count is 0"},
       }) {
    write(c.text);
    auto r = set_cli("up");
    EXPECT_EQ(r.code, 6) << c.text;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("nothing was changed"), std::string::npos) << r.err;
    EXPECT_EQ(pids(), before) << c.text;
    EXPECT_EQ(set_cli("down").code, 6);
    EXPECT_EQ(pids(), before) << c.text;
  }
  EXPECT_EQ(cli("up", {"-f", (files_ / "missing.toml").string()}).code, 6);
}

TEST_F(Sets, ANameTakenOutsideTheSetIsRefusedBeforeAnythingStarts) {
  std::string id = open({"--name", "b", "--", "sleep", "1000"});
  write("[a]\ncommand = \"exec sleep 1000\"\n[b]\ncommand = \"exec sleep 1000\"\n");
  auto r = set_cli("up");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("the name 'b' is taken by worker " + id), std::string::npos) << r.err;
  auto p = pids();
  EXPECT_EQ(p.size(), 1u);
  EXPECT_TRUE(p.contains("b"));
}

TEST_F(Sets, AProcfileComesUp) {
  write("web: exec sleep 1000\nclock: exec sleep 1001\n", "Procfile");
  auto r = cli("up", {"-f", (files_ / "Procfile").string()});
  ASSERT_EQ(r.code, 0) << r.err;
  auto p = pids();
  EXPECT_EQ(p.size(), 2u);
  EXPECT_GT(p["web"], 0);
  EXPECT_EQ(status("clock")["command"], (json{"/bin/sh", "-c", "exec sleep 1001"}));
}

TEST_F(Sets, ARollingRestartNeverHasFewerThanNMinusOneReady) {
  // Each instance takes a moment to be ready again, so a roll that did not
  // wait would be seen with two down at once.
  write(
      "[w]\ncommand = \"sleep 0.2; echo ready >&3; exec sleep 1000\"\nwait_ready = true\n"
      "count = 3\n");
  ASSERT_EQ(set_cli("up").code, 0);
  auto before = pids();
  ASSERT_EQ(before.size(), 3u);
  std::atomic<bool> done{false};
  std::atomic<int> fewest{3}, samples{0};
  // The records are read in this process (what `tether list` reads, without
  // a process started per sample), so even a slow build takes many samples
  // during the roll.
  auto state = must(tether::StateDir::open(dir_, false), "open the state directory");
  std::thread watch([&] {
    while (!done) {
      auto l = tether::list_workers(state);
      if (!l) continue;
      int up = 0;
      for (const auto& w : l->workers) up += w.state == tether::WorkerState::up ? 1 : 0;
      fewest = std::min(fewest.load(), up);
      ++samples;
      std::this_thread::sleep_for(1ms);
    }
  });
  auto r = cli("restart", {"--rolling", "w"});
  done = true;
  watch.join();
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("w: 3 restarted, one at a time"), std::string::npos) << r.out;
  auto after = pids();
  ASSERT_EQ(after.size(), 3u);
  for (const auto& [name, pid] : after) EXPECT_NE(pid, before[name]) << name;
  EXPECT_GT(samples.load(), 3);
  EXPECT_GE(fewest.load(), 2) << "samples: " << samples.load();
  EXPECT_EQ(cli("restart", {"--rolling", "nosuch"}).code, 3);
}

TEST_F(Sets, BulkFormsTakeSeveralWorkersASetOrAll) {
  write("name = \"bulk\"\n[w]\ncommand = \"exec sleep 1000\"\ncount = 2\n");
  ASSERT_EQ(set_cli("up").code, 0);
  std::string lone = open({"--name", "lone", "--", "sleep", "1000"});
  std::string other = open({"--name", "other", "--", "sleep", "1000"});

  auto stop = cli("stop", {"bulk"});
  ASSERT_EQ(stop.code, 0) << stop.err;
  EXPECT_EQ(status("w-1")["state"], "down");
  EXPECT_EQ(status("w-2")["state"], "down");
  EXPECT_EQ(status("lone")["state"], "up");
  auto start = cli("start", {"bulk"});
  ASSERT_EQ(start.code, 0) << start.err;
  EXPECT_EQ(status("w-1")["state"], "up");

  // An unknown one anywhere: nothing is sent to the others.
  auto before = pids();
  auto bad = cli("restart", {"w-1", "nosuch"});
  EXPECT_EQ(bad.code, 3);
  EXPECT_EQ(pids(), before);

  auto two = cli("exit", {"lone", other});
  ASSERT_EQ(two.code, 0) << two.err;
  EXPECT_NE(two.out.find("worker lone"), std::string::npos) << two.out;
  auto p = pids();
  EXPECT_EQ(p.size(), 2u);
  EXPECT_FALSE(p.contains("lone"));
  auto all = cli("exit", {"all"});
  ASSERT_EQ(all.code, 0) << all.err;
  EXPECT_TRUE(pids().empty());
  auto none = cli("exit", {"all"});
  EXPECT_EQ(none.code, 0);
  EXPECT_NE(none.out.find("no workers"), std::string::npos);
}

namespace {

// A reboot, as the workers see it: every supervisor and worker killed at
// once (no one exits cleanly), then the state directory emptied, as /run is.
void reboot(const fs::path& state, const json& workers) {
  std::vector<tether::Fd> gone;
  for (const auto& w : workers) {
    for (auto key : {"supervisor_pid", "pid"}) {
      auto pid = w[key].get<int>();
      if (pid <= 0) continue;
      gone.push_back(pidfd(pid));
      ::kill(key == std::string("pid") ? -pid : pid, SIGKILL);  // the worker's group
    }
  }
  for (const auto& fd : gone) {
    if (fd) {
      EXPECT_TRUE(ends_within(fd, 10s));
    }
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(state, ec)) fs::remove_all(e.path(), ec);
}

}  // namespace

TEST_F(Sets, SaveThenARebootThenResurrectBringsTheSameWorkersBackInOrder) {
  write("name = \"shop\"\n[web]\n" + worker("web") + "count = 2\nafter = [\"api\"]\n[db]\n" +
        worker("db") + "[api]\n" + worker("api") + "after = \"db\"\n");
  ASSERT_EQ(set_cli("up").code, 0);
  std::string solo = open({"--name", "solo", "--", "sleep", "1000"});
  // One taken down before the save comes back down.
  std::string idle = open({"--name", "idle", "--", "sleep", "1000"});
  ASSERT_EQ(cli("stop", {"idle"}).code, 0);
  auto saved = cli("save");
  ASSERT_EQ(saved.code, 0) << saved.err;
  EXPECT_NE(saved.out.find("saved 6 workers"), std::string::npos) << saved.out;
  struct stat st {};
  ASSERT_EQ(::stat((config_ / "saved.jsonl").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);  // specs hold the workers' environment
  auto l = cli("list", {"--json"});
  ASSERT_EQ(l.code, 0);
  json before = json::parse(l.out)["workers"];
  std::map<std::string, std::string> ids;
  for (const auto& w : before) ids[w["name"]] = w["id"];

  reboot(dir_, before);
  fs::remove(files_ / "order");
  ASSERT_TRUE(pids().empty());
  // A save before the resurrect would forget them all: refused.
  auto empty = cli("save");
  EXPECT_EQ(empty.code, 1);
  EXPECT_NE(empty.err.find("saving would forget the 6 saved"), std::string::npos) << empty.err;
  auto back = cli("resurrect");
  ASSERT_EQ(back.code, 0) << back.err << back.out;
  EXPECT_NE(back.out.find("resurrected 6 workers"), std::string::npos) << back.out;
  EXPECT_NE(back.out.find("started down, as it was saved"), std::string::npos) << back.out;
  // The set's order without its file: db, then api, then the webs.
  EXPECT_EQ(order(), "up-db\nup-api\nup-web\nup-web\n");
  auto l2 = cli("list", {"--json"});
  ASSERT_EQ(l2.code, 0);
  json after = json::parse(l2.out)["workers"];
  ASSERT_EQ(after.size(), 6u);
  for (const auto& w : after) {
    EXPECT_EQ(w["state"], w["name"] == "idle" ? "down" : "up") << w["name"];
    EXPECT_EQ(w["id"], ids[w["name"]]) << "the saved id again: " << w["name"];
  }
  EXPECT_EQ(status("web-2")["set"], "shop");
  // Twice: what runs is left alone.
  auto again = cli("resurrect");
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.out.find("resurrected 0 workers"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("6 already running"), std::string::npos) << again.out;
  // The one that came back down starts when asked.
  ASSERT_EQ(cli("start", {"idle"}).code, 0);
  EXPECT_EQ(status("idle")["state"], "up");
  EXPECT_GT(status("idle")["pid"].get<int>(), 0);
}

TEST_F(Sets, UpRecordsItsSetAndDownForgetsIt) {
  write("name = \"rec\"\n[a]\ncommand = \"exec sleep 1000\"\ncount = 2\n");
  std::string lone = open({"--name", "lone", "--", "sleep", "1000"});
  ASSERT_EQ(cli("save").code, 0);  // lone alone
  ASSERT_EQ(set_cli("up").code, 0);
  auto config = must(tether::ConfigDir::open(config_, false));
  auto names = [&] {
    std::vector<std::string> out;
    for (const auto& s : must(tether::read_saved(config)).workers) out.push_back(s.name);
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(names(), (std::vector<std::string>{"a-1", "a-2", "lone"}));
  ASSERT_EQ(set_cli("scale", {"a=3"}).code, 0);
  EXPECT_EQ(names(), (std::vector<std::string>{"a-1", "a-2", "a-3", "lone"}));
  ASSERT_EQ(set_cli("down").code, 0);
  EXPECT_EQ(names(), (std::vector<std::string>{"lone"}));
  // No temporary file is left beside it.
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(config_)) files.push_back(e.path().filename());
  EXPECT_EQ(files, (std::vector<std::string>{"saved.jsonl"}));
}

TEST_F(Sets, ResurrectRefusesASavedFileThatIsNotOneAndChangesNothing) {
  for (const std::string& text :
       {std::string("garbage\n"),
        std::string("{\"kind\":\"tether saved workers\",\"version\":9}\n"),
        std::string("{\"kind\":\"tether saved workers\",\"version\":1}\n"
                    "{\"id\":\"x\"}\n")}) {
    std::ofstream(config_ / "saved.jsonl", std::ios::trunc) << text;
    auto r = cli("resurrect");
    EXPECT_EQ(r.code, 1) << text;
    EXPECT_NE(r.err.find((config_ / "saved.jsonl").string() + ":"), std::string::npos) << r.err;
    EXPECT_TRUE(pids().empty());
  }
  // A FIFO where the file should be: refused at once, never waited on.
  fs::remove(config_ / "saved.jsonl");
  ASSERT_EQ(::mkfifo((config_ / "saved.jsonl").c_str(), 0600), 0);
  auto fifo = cli("resurrect", {}, 10s);
  EXPECT_EQ(fifo.code, 1);
  EXPECT_NE(fifo.err.find("not a regular file"), std::string::npos) << fifo.err;
  // A configuration directory others may write in is refused.
  fs::remove(config_ / "saved.jsonl");
  ASSERT_EQ(::chmod(config_.c_str(), 0777), 0);
  auto open_dir = cli("save");
  EXPECT_EQ(open_dir.code, 1);
  EXPECT_NE(open_dir.err.find("lets other users write in it"), std::string::npos) << open_dir.err;
  ASSERT_EQ(::chmod(config_.c_str(), 0700), 0);
  // Nothing saved: nothing to do, and that is no error.
  auto nothing = cli("resurrect");
  EXPECT_EQ(nothing.code, 0) << nothing.err;
  EXPECT_NE(nothing.out.find("nothing is saved"), std::string::npos) << nothing.out;
}

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `systemd-analyze verify` of the files, where it is installed: "" when it
// found nothing to say, else what it said; nullopt when it is missing.
std::optional<std::string> systemd_verify(const std::vector<fs::path>& units) {
  if (::access("/usr/bin/systemd-analyze", X_OK) != 0) return std::nullopt;
  tether::Command c("/usr/bin/systemd-analyze");
  c.arg("verify");
  for (const auto& u : units) c.arg(u.string());
  auto o = c.output({}, 60s);
  if (!o) return o.error().message();
  return o->status.success() ? o->err : o->status.describe() + ": " + o->err;
}

}  // namespace

TEST_F(Sets, StartupWritesAUnitWhoseCommandBringsTheSavedWorkersBack) {
  write("name = \"boot\"\n[db]\n" + worker("db") + "[web]\n" + worker("web") +
        "after = [\"db\"]\n");
  ASSERT_EQ(set_cli("up").code, 0);
  fs::path units = files_ / "units";
  auto r = cli("startup", {"--user", "--unit-dir", units.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  fs::path unit = units / "tether-resurrect.service";
  std::string text = read_text(unit);
  EXPECT_NE(text.find("Type=oneshot\n"), std::string::npos) << text;
  EXPECT_NE(text.find("RemainAfterExit=yes\n"), std::string::npos) << text;
  if (auto v = systemd_verify({unit})) {
    EXPECT_EQ(*v, "") << text;
  }

  // The unit's command, with the unit's environment, after a reboot.
  std::map<std::string, std::string> env;
  std::vector<std::string> argv;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    auto unquote = [](std::string w) {
      return w.size() >= 2 && w.front() == '"' && w.back() == '"' ? w.substr(1, w.size() - 2) : w;
    };
    if (line.starts_with("Environment=")) {
      auto kv = unquote(line.substr(12));
      env[kv.substr(0, kv.find('='))] = kv.substr(kv.find('=') + 1);
    } else if (line.starts_with("ExecStart=")) {
      std::istringstream words(line.substr(10));
      for (std::string w; words >> w;) argv.push_back(unquote(w));
    }
  }
  ASSERT_EQ(argv.size(), 2u) << text;
  EXPECT_EQ(argv[1], "resurrect");
  EXPECT_EQ(env["TETHER_CONFIG_DIR"], config_.string());
  EXPECT_EQ(env["TETHER_DIR"], dir_.string());
  auto l = cli("list", {"--json"});
  ASSERT_EQ(l.code, 0);
  reboot(dir_, json::parse(l.out)["workers"]);
  fs::remove(files_ / "order");
  tether::Command boot(argv[0]);
  boot.arg(argv[1]).env_remove("TETHER_DIR").env_remove("TETHER_CONFIG_DIR");
  for (const auto& [k, v] : env) boot.env(k, v);
  auto o = boot.output({}, 60s);
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_TRUE(o->status.success()) << o->err << o->out;
  EXPECT_EQ(order(), "up-db\nup-web\n");
  EXPECT_EQ(pids().size(), 2u);

  // Written again over its own file; never over someone else's.
  EXPECT_EQ(cli("startup", {"--user", "--unit-dir", units.string()}).code, 0);
  std::ofstream(unit, std::ios::trunc) << "[Unit]\nDescription=mine\n";
  auto theirs = cli("startup", {"--user", "--unit-dir", units.string()});
  EXPECT_EQ(theirs.code, 1);
  EXPECT_NE(theirs.err.find("was not written by tether"), std::string::npos) << theirs.err;
  EXPECT_EQ(read_text(unit), "[Unit]\nDescription=mine\n");
  EXPECT_EQ(cli("startup", {"--remove", "--unit-dir", units.string()}).code, 1);
  EXPECT_TRUE(fs::exists(unit));
  ASSERT_EQ(cli("startup", {"--user", "--force", "--unit-dir", units.string()}).code, 0);
  auto removed = cli("startup", {"--remove", "--unit-dir", units.string()});
  ASSERT_EQ(removed.code, 0) << removed.err;
  EXPECT_FALSE(fs::exists(unit));
  EXPECT_TRUE(fs::is_empty(units));
}

TEST_F(Sets, ExportSystemdWritesAUnitPerWorkerThatSystemdAccepts) {
  write(
      "name = \"shop\"\n[db]\ncommand = [\"sleep\", \"1000\"]\n[web]\n"
      "command = \"echo \\\"$HOME\\\" 100%\"\ncount = 2\nafter = [\"db\"]\nrestart = \"always\"\n"
      "env = { GREETING = \"50% \\\"off\\\"\" }\nmemory_limit = \"256M\"\n");
  fs::path out = files_ / "units";
  ASSERT_EQ(::mkdir(out.c_str(), 0700), 0);
  auto r = cli("export", {"systemd", out.string(), "-f", (files_ / "tether.toml").string()});
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<fs::path> units;
  for (const auto& e : fs::directory_iterator(out)) units.push_back(e.path());
  std::sort(units.begin(), units.end());
  ASSERT_EQ(units.size(), 4u);
  EXPECT_EQ(units[0].filename(), "shop-db.service");
  EXPECT_EQ(units[3].filename(), "shop.target");
  std::string web = read_text(out / "shop-web-2.service");
  EXPECT_NE(web.find("After=shop-db.service\nWants=shop-db.service\n"), std::string::npos) << web;
  EXPECT_NE(web.find("ExecStart=\"/bin/sh\" \"-c\" \"echo \\\"$$HOME\\\" 100%%\"\n"),
            std::string::npos)
      << web;
  EXPECT_NE(web.find("Environment=\"GREETING=50%% \\\"off\\\"\"\n"), std::string::npos) << web;
  EXPECT_NE(web.find("Restart=always\n"), std::string::npos) << web;
  EXPECT_NE(web.find("MemoryMax=268435456\n"), std::string::npos) << web;
  EXPECT_EQ(read_text(out / "shop-db.service").find("MemoryMax"), std::string::npos);
  EXPECT_NE(web.find("WorkingDirectory=" + files_.string() + "\n"), std::string::npos) << web;
  EXPECT_NE(read_text(out / "shop.target")
                .find("Wants=shop-db.service shop-web-1.service shop-web-2.service\n"),
            std::string::npos);
  if (auto v = systemd_verify(units)) {
    EXPECT_EQ(*v, "");
  }
  EXPECT_TRUE(pids().empty()) << "export starts nothing";

  // A file of someone else's among them: refused, and nothing is written.
  std::ofstream(out / "shop-db.service", std::ios::trunc) << "mine\n";
  auto before = read_text(out / "shop-web-1.service");
  write("name = \"shop\"\n[db]\ncommand = 'x'\n[web]\ncommand = 'y'\ncount = 2\n");
  auto refused = cli("export", {"systemd", out.string(), "-f", (files_ / "tether.toml").string()});
  EXPECT_EQ(refused.code, 1);
  EXPECT_NE(refused.err.find("was not written by tether"), std::string::npos) << refused.err;
  EXPECT_EQ(read_text(out / "shop-db.service"), "mine\n");
  EXPECT_EQ(read_text(out / "shop-web-1.service"), before);
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(out)) ++n;
  EXPECT_EQ(n, 4u) << "no temporary file left";
  EXPECT_EQ(cli("export", {"launchd", out.string()}).code, 2);
}

TEST_F(Supervise, ListAndStatusShowWhatTheWorkerAndItsChildrenUse) {
  // A child holding 32 MiB it has touched (dd's buffer, blocked on a pipe
  // nobody reads), after the worker has burned some CPU itself.
  const std::string script =
      "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; "
      "dd if=/dev/zero bs=32M count=1 2>/dev/null | sleep 1000";
  std::string id = open({"--name", "user", "--", "sh", "-c", script});
  json usage;
  for (int i = 0; i < 2000; ++i) {  // a bound against hanging, not a measurement
    usage = status(id)["usage"];
    if (usage.is_object() && usage["processes"].get<int>() >= 3 &&
        usage["rss_bytes"].get<std::uint64_t>() > (32u << 20) && usage["cpu_ms"].get<int>() > 0) {
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(usage.is_object()) << usage;
  EXPECT_EQ(usage["processes"], 3) << usage;  // sh, dd, sleep
  EXPECT_GT(usage["rss_bytes"].get<std::uint64_t>(), 32u << 20) << usage;
  EXPECT_GT(usage["pss_bytes"].get<std::uint64_t>(), 16u << 20) << usage;
  EXPECT_LE(usage["pss_bytes"].get<std::uint64_t>(), usage["rss_bytes"].get<std::uint64_t>());
  EXPECT_GT(usage["cpu_ms"].get<int>(), 0) << usage;
  EXPECT_GT(usage["cpu_percent"].get<double>(), 0.0) << usage;
  auto l = cli("list");
  ASSERT_EQ(l.code, 0);
  EXPECT_NE(l.out.find("CPU%"), std::string::npos) << l.out;
  EXPECT_NE(l.out.find("PSS"), std::string::npos) << l.out;
  EXPECT_NE(l.out.find("M "), std::string::npos) << l.out;  // tens of MiB, shown as M
  auto s = cli("status", {id});
  EXPECT_NE(s.out.find("3 processes"), std::string::npos) << s.out;
  json listed = json::parse(cli("list", {"--json"}).out)["workers"][0]["usage"];
  EXPECT_EQ(listed["processes"], 3) << listed;
  // Taken down: nothing runs, nothing is counted.
  ASSERT_EQ(cli("stop", {id}).code, 0);
  EXPECT_TRUE(status(id)["usage"].is_null()) << status(id);
}

// A child that ended still counts: the CPU a worker's shell spent through
// children it waited for (cutime) is the worker's, so its figure never
// falls when a child ends. The three awk runs burn about 0.25 s each; the
// shell's own CPU is a few milliseconds.
TEST_F(Supervise, TheCpuOfChildrenThatEndedIsStillTheWorkers) {
  const std::string script =
      "for i in 1 2 3; do awk 'BEGIN { for (i = 0; i < 10000000; i++) x += i }'; done; "
      "echo burned-$((6 * 7)); exec sleep 1000";  // the log's start line shows no 42
  std::string id = open({"--name", "burner", "--", "sh", "-c", script});
  for (int i = 0; i < 3000 && log_of(id).find("burned-42") == std::string::npos; ++i) {
    std::this_thread::sleep_for(10ms);  // a bound against hanging, not a measurement
  }
  ASSERT_NE(log_of(id).find("burned-42"), std::string::npos) << log_of(id);
  json usage = status(id)["usage"];
  ASSERT_TRUE(usage.is_object()) << usage;
  EXPECT_EQ(usage["processes"], 1) << usage;  // sleep, in the shell's place
  EXPECT_GT(usage["cpu_ms"].get<int>(), 150) << usage;
}

// --down: the supervisor runs, the worker does not until `start` (runit's
// down file); the log says so.
TEST_F(Supervise, OpenDownStartsTheSupervisorAloneUntilStart) {
  auto r = cli("open", {"--down", "--name", "lazy", "--", "sleep", "1000"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("(name lazy), down;"), std::string::npos) << r.out;
  json st = status("lazy");
  EXPECT_EQ(st["state"], "down") << st;
  EXPECT_EQ(st["want"], "down") << st;
  EXPECT_LE(st["pid"].get<int>(), 0) << st;
  std::string id = st["id"];
  EXPECT_NE(log_of(id).find("started down"), std::string::npos) << log_of(id);
  auto j = cli("open", {"--down", "--json", "--name", "lazy2", "--", "sleep", "1000"});
  ASSERT_EQ(j.code, 0) << j.err;
  EXPECT_EQ(json::parse(j.out)["pid"], 0) << j.out;
  ASSERT_EQ(cli("start", {"lazy"}).code, 0);
  st = status("lazy");
  EXPECT_EQ(st["state"], "up") << st;
  EXPECT_GT(st["pid"].get<int>(), 0) << st;
}

// --max-memory: the worker and the processes it started, over the limit,
// are stopped and restarted as after a crash (counted, logged with the
// figures, through the backoff) until --max-restarts is spent, then left
// ended; with --restart never it is not restarted; one under its limit is
// left alone; one over it before it is ready fails its start, leaves nothing.
TEST_F(Supervise, AWorkerOverItsMemoryLimitIsRestartedWithTheFiguresLogged) {
  std::string thin = open({"--name", "thin", "--max-memory", "64M", "--memory-interval", "0.05",
                           "--", "sleep", "1000"});
  // dd, a child of the worker's shell, holds 48 MiB it has touched.
  const std::string fat_script = "dd if=/dev/zero bs=48M count=1 2>/dev/null | sleep 1000";
  std::string fat = open({"--name", "fat", "--max-memory", "16M", "--memory-interval", "0.05",
                          "--max-restarts", "2", "--", "sh", "-c", fat_script});
  json st;
  for (int i = 0; i < 2000; ++i) {  // a bound against hanging, not a measurement
    st = status(fat);
    if (st["state"] == "exited") break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(st["state"], "exited") << st;
  EXPECT_EQ(st["want"], "up") << st;
  EXPECT_EQ(st["restarts"], 2) << st;
  EXPECT_EQ(st["memory_limit_bytes"], 16u << 20) << st;
  std::string log = log_of(fat);
  EXPECT_NE(log.find("over its memory limit: "), std::string::npos) << log;
  EXPECT_NE(log.find("> limit 16.0 MiB: restarting"), std::string::npos) << log;
  EXPECT_NE(log.find("in 3 processes"), std::string::npos) << log;  // sh, dd, sleep
  EXPECT_NE(log.find("> limit 16.0 MiB: stopping"), std::string::npos) << log;
  EXPECT_NE(log.find("not restarting: 2 restarts already"), std::string::npos) << log;
  // Checked every 50 ms all along, the small one never was over.
  EXPECT_EQ(status(thin)["restarts"], 0);
  EXPECT_EQ(log_of(thin).find("memory limit"), std::string::npos) << log_of(thin);
  auto text = cli("status", {thin});
  EXPECT_NE(text.out.find("(limit 64.0M, checked every 50 ms)"), std::string::npos) << text.out;

  // --restart never: stopped over its limit, and left so.
  std::string once = open({"--name", "never", "--restart", "never", "--max-memory", "16M",
                           "--memory-interval", "0.05", "--", "sh", "-c", fat_script});
  for (int i = 0; i < 2000; ++i) {
    st = status(once);
    if (st["state"] == "exited") break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(st["state"], "exited") << st;
  EXPECT_EQ(st["restarts"], 0) << st;
  EXPECT_NE(log_of(once).find("> limit 16.0 MiB: stopping"), std::string::npos) << log_of(once);

  // Over it before it says it is ready: the start fails, nothing is left.
  auto early = cli("open", {"--name", "early", "--wait-ready", "--max-memory", "16M",
                            "--memory-interval", "0.05", "--", "sh", "-c", fat_script});
  EXPECT_EQ(early.code, 1);
  EXPECT_NE(early.err.find("over its memory limit"), std::string::npos) << early.err;
  auto l = json::parse(cli("list", {"--json"}).out);
  EXPECT_EQ(l["workers"].size(), 3u) << l;
  // A size that is not one is refused before anything starts.
  EXPECT_EQ(cli("open", {"--max-memory", "lots", "--", "sleep", "1"}).code, 2);
  EXPECT_EQ(cli("open", {"--max-memory", "512K", "--", "sleep", "1"}).code, 2);
}

TEST_F(Supervise, LogsOfSeveralWorkersAreMergedInTimeOrderWithTheirNames) {
  // Two workers take turns, each waiting until the other's line is in its
  // log (so stamped) before writing the next: the true order is a1 b1 a2 b2.
  fs::path turn = dir_.parent_path() / tether_test::unique_name("tt-turn");
  auto step = [&](const std::string& line, const std::string& wait, const std::string& done) {
    return fmt::format(
        "{0}until [ -e {1}{2} ]; do sleep 0.01; done; echo {3}; "
        "until grep -q {3} \"$TETHER_DIR/$TETHER_WORKER_ID/worker.log\"; do sleep 0.01; done; "
        "touch {1}{4}; ",
        "", turn.string(), wait, line, done);
  };
  ASSERT_EQ(::close(::open((turn.string() + "0").c_str(), O_CREAT | O_WRONLY, 0600)), 0);
  std::string a = open({"--name", "alpha", "--", "sh", "-c",
                        step("a1", "0", "1") + step("a2", "2", "3") + "exec sleep 1000"});
  std::string b = open({"--name", "b", "--", "sh", "-c",
                        step("b1", "1", "2") + step("b2", "3", "4") + "exec sleep 1000"});
  for (int i = 0; i < 2000 && !fs::exists(turn.string() + "4"); ++i) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(fs::exists(turn.string() + "4"));
  auto merged = cli("logs", {"-n", "-1"});  // none named: all of them
  ASSERT_EQ(merged.code, 0) << merged.err;
  std::vector<std::string> said;
  std::istringstream lines(merged.out);
  for (std::string line; std::getline(lines, line);) {
    for (auto w : {"a1", "a2", "b1", "b2"}) {
      if (line.ends_with(std::string(" ") + w))
        said.push_back(line.substr(0, line.find('|') + 1) + w);
    }
  }
  // Plain when piped, the names padded to the longest.
  EXPECT_EQ(said, (std::vector<std::string>{"alpha |a1", "b     |b1", "alpha |a2", "b     |b2"}))
      << merged.out;
  EXPECT_EQ(merged.out.find("\x1b["), std::string::npos);
  // Several named, and the last lines only.
  auto two = cli("logs", {a, b, "-n", "2"});
  ASSERT_EQ(two.code, 0) << two.err;
  EXPECT_NE(two.out.find("alpha | "), std::string::npos) << two.out;
  EXPECT_NE(two.out.find("b2"), std::string::npos) << two.out;
  EXPECT_EQ(std::count(two.out.begin(), two.out.end(), '\n'), 2) << two.out;
  // One worker: its log as before, without prefixes.
  auto one = cli("logs", {a, "-n", "-1"});
  ASSERT_EQ(one.code, 0);
  EXPECT_EQ(one.out.find("alpha |"), std::string::npos) << one.out;
  EXPECT_NE(one.out.find("a2"), std::string::npos) << one.out;
  EXPECT_EQ(cli("logs", {"nosuch"}).code, 3);
  // Signalled together: the bulk form of signal.
  EXPECT_EQ(cli("signal", {a, b, "BOGUS"}).code, 2);
  ASSERT_EQ(cli("signal", {a, b, "KILL"}).code, 0);
  for (int i = 0; i < 2000; ++i) {
    if (status(a)["restarts"] == 1 && status(b)["restarts"] == 1) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(status(a)["restarts"], 1);
  EXPECT_EQ(status(b)["restarts"], 1);
  for (int k = 0; k <= 4; ++k) fs::remove(turn.string() + std::to_string(k));
}

TEST_F(Supervise, MergedLogsFollowEveryWorkerAndEndWhenAllHaveGone) {
  std::string a = open({"--name", "fa", "--log-size", "4096"});
  std::string b = open({"--name", "fb"});
  tether::Command follow(TETHER_CLI);
  follow.args({"logs", "-f", "-n", "0", a, b}).env("TETHER_DIR", dir_.string());
  auto p = must(follow.stdout_to(tether::Stdio::pipe()).stderr_to(tether::Stdio::null()).spawn());
  tether::PipeReader out(std::move(p.stdout_fd()));
  std::string seen;
  auto read_until = [&](const std::string& text) {
    return tether_test::read_until(out, seen, text);
  };
  // Until the follower shows a line it may not be watching yet: send again.
  for (int i = 0; i < 200 && seen.find("fa | ") == std::string::npos; ++i) {
    ASSERT_EQ(cli("send", {a, "ping"}).code, 0);
    std::byte buf[4096];
    if (auto n = out.read(buf, 100ms); n && *n > 0) {
      seen.append(reinterpret_cast<const char*>(buf), *n);
    }
  }
  ASSERT_NE(seen.find("fa | "), std::string::npos) << seen;
  ASSERT_EQ(cli("send", {b, "from-b"}).code, 0);
  EXPECT_TRUE(read_until("fb | ")) << seen;
  EXPECT_TRUE(read_until("received: from-b")) << seen;
  // a's log rotated under the follower, twice or more while it was stopped
  // (so it cannot have read in between): nothing lost, the middle file too.
  ASSERT_EQ(::kill(p.pid(), SIGSTOP), 0);
  for (int i = 0; i < 80; ++i) {
    ASSERT_EQ(cli("send", {a, "line-" + std::to_string(i) + std::string(60, '.')}).code, 0);
  }
  ASSERT_TRUE(log_shows(a, "received: line-79")) << log_of(a);
  EXPECT_TRUE(fs::exists(dir_ / a / "worker.log.2")) << "rotated at least twice";
  ASSERT_EQ(::kill(p.pid(), SIGCONT), 0);
  EXPECT_TRUE(read_until("received: line-79")) << seen.substr(0, 500);
  for (int i = 0; i < 80; ++i) {
    EXPECT_NE(seen.find("received: line-" + std::to_string(i) + "."), std::string::npos) << i;
  }
  ASSERT_EQ(cli("exit", {a}).code, 0);
  ASSERT_EQ(cli("exit", {b}).code, 0);
  auto st = p.wait(20s);  // it ends by itself once both have gone
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_TRUE(st->success());
}
