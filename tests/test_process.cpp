#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "support.hpp"

using namespace std::chrono_literals;
using tether::Command;
using tether::ExitStatus;
using tether::Stdio;
using tether_test::Clean;
using tether_test::helper;
using tether_test::must;

namespace {

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool pid_alive(pid_t pid) {
  return ::kill(pid, 0) == 0;
}

// A temporary directory removed at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() / tether_test::unique_name("tether-test");
    std::filesystem::create_directory(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace

// ---------------------------------------------------------------- exit status

using Status = Clean;

TEST_F(Status, ExitCodeAndSignalAreKeptApart) {
  auto by_code = must(helper("exit", {"137"}).status());
  EXPECT_EQ(by_code.code(), 137);
  EXPECT_FALSE(by_code.signal());
  EXPECT_FALSE(by_code.success());
  EXPECT_EQ(by_code.describe(), "exited with code 137");

  auto by_signal = must(helper("signal", {std::to_string(SIGKILL)}).status());
  EXPECT_EQ(by_signal.signal(), SIGKILL);
  EXPECT_FALSE(by_signal.code());
  EXPECT_EQ(by_signal.describe(), "killed by SIGKILL");
  EXPECT_NE(by_code, by_signal);
  EXPECT_EQ(by_code.as_s6_code(), 137);
  EXPECT_EQ(by_signal.as_s6_code(), 256 + SIGKILL);
}

TEST_F(Status, SuccessAndPid) {
  auto p = must(helper("exit", {"0"}).spawn());
  pid_t pid = p.pid();
  auto st = must(p.wait());
  EXPECT_TRUE(st.success());
  EXPECT_EQ(st.pid(), pid);
  ASSERT_TRUE(p.status());
  EXPECT_EQ(*p.status(), st);
  // Waiting again returns the same status, without a second reap.
  EXPECT_EQ(must(p.wait()), st);
}

TEST_F(Status, CoreDumpFlagFromWaitStatus) {
  auto st = ExitStatus::from_wait_status(0x80 | SIGSEGV);  // WCOREDUMP set
  EXPECT_EQ(st.signal(), SIGSEGV);
  EXPECT_TRUE(st.core_dumped());
  EXPECT_EQ(st.describe(), "killed by SIGSEGV (core dumped)");
  EXPECT_EQ(ExitStatus::from_wait_status(3 << 8).code(), 3);
}

TEST_F(Status, AbortIsReportedAsSignal) {
  // RLIMIT_CORE 0 in the child: no core file is written whatever core_pattern says.
  auto st =
      must(Command("sh")
               .args({"-c", "ulimit -c 0; exec \"$0\" --helper signal 6", tether_test::self_exe()})
               .status());
  EXPECT_EQ(st.signal(), SIGABRT);
  EXPECT_FALSE(st.core_dumped());
}

TEST_F(Status, ResourceUsageIsReported) {
  auto burn = must(helper("burn", {"150"}).status());
  EXPECT_GE(burn.usage().user_cpu + burn.usage().system_cpu, 100ms);
  auto alloc = must(helper("alloc", {"64"}).status());
  EXPECT_GE(alloc.usage().max_rss_kib, 64 * 1024);
  EXPECT_GE(alloc.usage().minor_faults, 64 * 1024 / 4 / 2);  // at least one fault per 2 pages
}

// ---------------------------------------------------------------- spawn

using Spawn = Clean;

TEST_F(Spawn, ExecFailureIsAnErrorFromSpawnAndLeavesNoZombie) {
  auto p = Command("/no/such/prog").spawn();
  ASSERT_FALSE(p);
  TT_EXPECT_ERROR(p, std::errc::no_such_file_or_directory);
  EXPECT_EQ(p.error().message(), "spawn /no/such/prog: No such file or directory (ENOENT)");
  EXPECT_FALSE(tether_test::has_children());

  auto q = Command("no-such-program-tether").spawn();
  ASSERT_FALSE(q);
  TT_EXPECT_ERROR(q, std::errc::no_such_file_or_directory);
}

TEST_F(Spawn, NonExecutableFileIsPermissionDenied) {
  TempDir dir;
  auto file = dir.path / "not-executable";
  std::ofstream(file) << "#!/bin/sh\nexit 0\n";
  auto p = Command(file.string()).spawn();
  ASSERT_FALSE(p);
  TT_EXPECT_ERROR(p, std::errc::permission_denied);
}

TEST_F(Spawn, BadWorkingDirectoryAndBadFileAreErrors) {
  auto p = helper("exit", {"0"}).cwd("/no/such/dir").spawn();
  ASSERT_FALSE(p);
  TT_EXPECT_ERROR(p, std::errc::no_such_file_or_directory);
  EXPECT_NE(p.error().message().find("chdir /no/such/dir"), std::string::npos)
      << p.error().message();

  auto q = helper("exit", {"0"}).stdin_from(Stdio::file("/no/such/input")).spawn();
  ASSERT_FALSE(q);
  EXPECT_NE(q.error().message().find("/no/such/input"), std::string::npos) << q.error().message();
}

TEST_F(Spawn, ThousandSpawnsLeaveNoZombieAndNoDescriptor) {
  int before = must(tether::count_open_fds());
  for (int i = 0; i < 1000; ++i) {
    auto p = Command("/bin/true").spawn();
    ASSERT_TRUE(p) << p.error().message();
    auto st = p->wait();
    ASSERT_TRUE(st);
    ASSERT_TRUE(st->success());
  }
  EXPECT_FALSE(tether_test::has_children());
  EXPECT_EQ(must(tether::count_open_fds()), before);
}

TEST_F(Spawn, NoDescriptorLeakAcrossFailures) {
  int before = must(tether::count_open_fds());
  for (int i = 0; i < 50; ++i) {
    auto p = Command("/no/such/prog")
                 .stdin_from(Stdio::pipe())
                 .stdout_to(Stdio::pipe())
                 .stderr_to(Stdio::null())
                 .spawn();
    ASSERT_FALSE(p);
    auto q = helper("exit", {"0"}).cwd("/no/such/dir").stdout_to(Stdio::pipe()).spawn();
    ASSERT_FALSE(q);
  }
  EXPECT_EQ(must(tether::count_open_fds()), before);
}

TEST_F(Spawn, ChildGetsOnlyStandardDescriptors) {
  // Open descriptors the child must not see, one of them without O_CLOEXEC.
  tether::Fd leaky(::open("/dev/null", O_RDONLY));
  ASSERT_TRUE(leaky);
  auto pipe = must(tether::make_pipe());
  auto out = must(helper("fds").output());
  std::set<std::string> fds;
  for (auto& l : lines(out.out)) fds.insert(l);
  // 0, 1, 2 and the descriptor directory_iterator itself opened.
  EXPECT_TRUE(fds.count("0") && fds.count("1") && fds.count("2"));
  EXPECT_EQ(fds.count(std::to_string(leaky.get())), 0u);
  EXPECT_EQ(fds.count(std::to_string(pipe.first.get())), 0u);
  EXPECT_LE(fds.size(), 4u) << out.out;
}

TEST_F(Spawn, PassFdMapsADescriptorIntoTheChild) {
  auto pipe = must(tether::make_pipe());
  auto p = must(
      Command("sh").args({"-c", "echo through-fd-5 >&5"}).pass_fd(pipe.second.get(), 5).spawn());
  pipe.second.reset();
  std::string got(64, '\0');
  auto n =
      must(tether::read_some(pipe.first.get(), std::as_writable_bytes(std::span(got)), "pipe"));
  got.resize(n);
  EXPECT_EQ(got, "through-fd-5\n");
  EXPECT_TRUE(must(p.wait()).success());
}

TEST_F(Spawn, ArgumentsAndArgv0) {
  auto out = must(helper("argv", {"one", "two words", ""}).arg0("renamed").output());
  auto l = lines(out.out);
  ASSERT_EQ(l.size(), 6u) << out.out;
  EXPECT_EQ(l[0], "renamed");
  EXPECT_EQ(l[3], "one");
  EXPECT_EQ(l[4], "two words");
  EXPECT_EQ(l[5], "");
}

TEST_F(Spawn, EnvironmentSetUnsetClear) {
  ::setenv("TETHER_TEST_INHERITED", "from-parent", 1);
  EXPECT_EQ(must(helper("env", {"TETHER_TEST_INHERITED"}).output()).out, "from-parent\n");
  EXPECT_EQ(
      must(helper("env", {"TETHER_TEST_INHERITED"}).env_remove("TETHER_TEST_INHERITED").output())
          .out,
      "<unset>\n");
  EXPECT_EQ(
      must(helper("env", {"TETHER_X"}).env("TETHER_X", "1").env("TETHER_X", "2").output()).out,
      "2\n");
  EXPECT_EQ(must(helper("env", {"TETHER_TEST_INHERITED"}).env_clear().output()).out, "<unset>\n");
  EXPECT_EQ(must(helper("env", {"HOME"}).env_clear().env("HOME", "/h").output()).out, "/h\n");
  ::unsetenv("TETHER_TEST_INHERITED");
}

TEST_F(Spawn, PathLookupUsesTheChildsPath) {
  TempDir dir;
  auto script = dir.path / "tether-hello";
  std::ofstream(script) << "#!/bin/sh\necho hello from path\n";
  std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  auto out =
      must(Command("tether-hello").env("PATH", "/nonexistent:" + dir.path.string()).output());
  EXPECT_EQ(out.out, "hello from path\n");
  // A script without #! runs through /bin/sh, as execvp does.
  auto bare = dir.path / "tether-bare";
  std::ofstream(bare) << "echo bare script $1\n";
  std::filesystem::permissions(bare, std::filesystem::perms::owner_all);
  EXPECT_EQ(must(Command(bare.string()).arg("ok").output()).out, "bare script ok\n");
}

TEST_F(Spawn, WorkingDirectory) {
  TempDir dir;
  auto out = must(helper("cwd").cwd(dir.path).output());
  EXPECT_EQ(out.out, std::filesystem::canonical(dir.path).string() + "\n");
}

TEST_F(Spawn, StdioNullFileAppendFdAndMerge) {
  TempDir dir;
  auto log = dir.path / "log";
  EXPECT_TRUE(must(helper("stderr")
                       .stdout_to(Stdio::file(log))
                       .stderr_to(Stdio::merge_into_stdout())
                       .status())
                  .success());
  EXPECT_TRUE(
      must(helper("stderr").stdout_to(Stdio::file(log, true)).stderr_to(Stdio::null()).status())
          .success());
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(text, "to stderr\nto stdout\nto stdout\n");
  EXPECT_EQ(std::filesystem::status(log).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);

  // stdout given our pipe's descriptor, stderr as a separate pipe.
  auto pipe = must(tether::make_pipe());
  auto out = must(helper("stderr").stdout_to(Stdio::fd(pipe.second.get())).output());
  pipe.second.reset();
  EXPECT_EQ(out.err, "to stderr\n");
  EXPECT_EQ(out.out, "");
  std::string got(64, '\0');
  got.resize(
      must(tether::read_some(pipe.first.get(), std::as_writable_bytes(std::span(got)), "pipe")));
  EXPECT_EQ(got, "to stdout\n");
}

TEST_F(Spawn, StdinFromFile) {
  TempDir dir;
  std::ofstream(dir.path / "in") << "file contents";
  auto out = must(helper("echo").stdin_from(Stdio::file(dir.path / "in")).output());
  EXPECT_EQ(out.out, "file contents");
}

TEST_F(Spawn, ChildStartsWithCleanSignalState) {
  // Block SIGUSR1 and ignore SIGPIPE here: the child must see neither.
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  auto old_pipe = ::signal(SIGPIPE, SIG_IGN);
  auto out = helper("status-lines").output();
  ::signal(SIGPIPE, old_pipe);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_TRUE(out);
  EXPECT_NE(out->out.find("SigBlk:\t0000000000000000"), std::string::npos) << out->out;
  EXPECT_NE(out->out.find("SigIgn:\t0000000000000000"), std::string::npos) << out->out;
}

TEST_F(Spawn, NewProcessGroupAndSession) {
  auto group = must(helper("ids").new_process_group().stdout_to(Stdio::pipe()).spawn());
  pid_t pid = group.pid();
  EXPECT_EQ(group.process_group(), pid);
  auto out = must(group.communicate());
  auto ids = lines(out.out).at(0);
  EXPECT_EQ(ids.substr(0, ids.find(' ')), std::to_string(pid));
  EXPECT_NE(ids.find(" " + std::to_string(pid) + " "), std::string::npos) << ids;  // pgid == pid

  auto session = must(helper("ids").new_session().stdout_to(Stdio::pipe()).spawn());
  pid = session.pid();
  out = must(session.communicate());
  auto p = std::to_string(pid);
  EXPECT_EQ(lines(out.out).at(0), p + " " + p + " " + p);  // pid == pgid == sid
}

// ---------------------------------------------------------------- waiting

using Wait = Clean;

TEST_F(Wait, DeadlineAndNonBlocking) {
  auto p = must(helper("sleep", {"5000"}).spawn());
  auto polled = p.try_wait();
  ASSERT_TRUE(polled);
  EXPECT_FALSE(*polled);  // still running
  auto st = p.wait(50ms);
  ASSERT_FALSE(st);
  TT_EXPECT_ERROR(st, std::errc::timed_out);
  EXPECT_TRUE(pid_alive(p.pid()));
  auto killed = must(p.kill());
  EXPECT_EQ(killed.signal(), SIGKILL);
  auto again = must(p.try_wait());
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, killed);
}

TEST_F(Wait, AlreadyReapedElsewhereIsAnErrorNotAHang) {
  auto p = must(helper("exit", {"3"}).spawn());
  // Another part of the program reaps it by pid.
  int raw = 0;
  ASSERT_EQ(::waitpid(p.pid(), &raw, 0), p.pid());
  auto st = p.wait(5s);
  ASSERT_FALSE(st);
  TT_EXPECT_ERROR(st, std::errc::no_child_process);
  EXPECT_NE(st.error().message().find("already reaped"), std::string::npos);
  auto blocking = p.wait();
  ASSERT_FALSE(blocking);
  TT_EXPECT_ERROR(blocking, std::errc::no_child_process);
  // And signalling does not reach whatever now has that pid: the pidfd is dead.
  EXPECT_FALSE(p.signal(SIGTERM));
}

namespace {
std::atomic<int> alarms{0};
void on_alarm(int) {
  alarms.fetch_add(1);
}

// SIGALRM every millisecond, without SA_RESTART: every blocking call gets EINTR.
struct AlarmStorm {
  struct sigaction old_action {};
  AlarmStorm() {
    struct sigaction sa {};
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, &old_action);
    itimerval every_ms{{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &every_ms, nullptr);
  }
  ~AlarmStorm() {
    itimerval off{};
    setitimer(ITIMER_REAL, &off, nullptr);
    sigaction(SIGALRM, &old_action, nullptr);
  }
};
}  // namespace

TEST_F(Wait, WaitsSurviveSignals) {
  AlarmStorm storm;
  alarms = 0;
  auto p = must(helper("exit", {"0"}).spawn());
  auto slow = must(helper("sleep", {"200"}).spawn());
  EXPECT_TRUE(must(slow.wait()).success());  // blocking waitid, interrupted many times
  auto slower = must(helper("sleep", {"200"}).spawn());
  EXPECT_TRUE(must(slower.wait(10s)).success());  // deadline form: poll resumes with time left
  EXPECT_TRUE(must(p.wait()).success());
  auto out = must(helper("spew", {"3000000", "1000000"}).output());  // pump under signals
  EXPECT_EQ(out.out.size(), 3000000u);
  EXPECT_EQ(out.err.size(), 1000000u);
  EXPECT_GT(alarms.load(), 50);
}

TEST_F(Wait, InjectedEintrIsRetried) {
  auto p = must(helper("exit", {"4"}).spawn());
  tether::detail::injected_eintr = 3;
  EXPECT_EQ(must(p.wait(5s)).code(), 4);
  EXPECT_EQ(tether::detail::injected_eintr, 0);
}

TEST_F(Wait, WaitAnyReturnsTheFirstToEnd) {
  std::vector<tether::Process> procs;
  procs.push_back(must(helper("sleep", {"3000"}).spawn()));
  procs.push_back(must(helper("exit", {"9"}).spawn()));
  procs.push_back(must(helper("sleep", {"3000"}).spawn()));
  auto first = must(tether::wait_any(procs, 10s));
  EXPECT_EQ(first.index, 1u);
  EXPECT_EQ(first.status.code(), 9);
  auto timeout = tether::wait_any(procs, 20ms);
  ASSERT_FALSE(timeout);
  TT_EXPECT_ERROR(timeout, std::errc::timed_out);
  procs[0].kill().value();
  procs[2].kill().value();
  auto none = tether::wait_any(procs);
  ASSERT_FALSE(none);
  TT_EXPECT_ERROR(none, std::errc::no_child_process);
}

TEST_F(Wait, WaitAnyChildAndReapAll) {
  auto a = must(helper("exit", {"1"}).spawn());
  auto b = must(helper("exit", {"2"}).spawn());
  auto c = must(helper("exit", {"3"}).spawn());
  pid_t pa = a.pid(), pb = b.pid(), pc = c.pid();
  // os.wait(): any child.
  auto first = must(tether::wait_any_child(20s));
  // Let the other two become zombies (a pidfd turns readable on exit)...
  std::set<pid_t> rest;
  for (auto* p : {&a, &b, &c}) {
    if (p->pid() == first.pid()) continue;
    ASSERT_TRUE(tether::wait_fd(p->pidfd(), POLLIN, 20s, "child"));
    rest.insert(p->pid());
  }
  // ...then one call reaps both.
  std::set<pid_t> reaped;
  for (auto& st : must(tether::reap_finished_children())) reaped.insert(st.pid());
  EXPECT_EQ(reaped, rest);
  reaped.insert(first.pid());
  EXPECT_EQ(reaped, (std::set<pid_t>{pa, pb, pc}));
  // The Process objects now see ECHILD rather than hanging.
  for (auto* p : {&a, &b, &c}) EXPECT_EQ(p->wait(5s).error(), std::errc::no_child_process);
  EXPECT_TRUE(must(tether::reap_finished_children()).empty());
  auto none = tether::wait_any_child(10ms);
  ASSERT_FALSE(none);
  TT_EXPECT_ERROR(none, std::errc::no_child_process);
}

// ---------------------------------------------------------------- signals

using Signals = Clean;

TEST_F(Signals, TerminateEscalatesToKill) {
  auto stubborn = must(helper("ignore-term-sleep", {"20000"}).stdout_to(Stdio::pipe()).spawn());
  char ready[6];
  ASSERT_TRUE(tether::read_some(stubborn.stdout_fd().get(),
                                std::as_writable_bytes(std::span(ready)), "ready"));
  auto st = must(stubborn.terminate(100ms));
  EXPECT_EQ(st.signal(), SIGKILL);

  auto polite = must(helper("sleep", {"20000"}).spawn());
  EXPECT_EQ(must(polite.terminate(5s)).signal(), SIGTERM);
}

TEST_F(Signals, AnySignalThroughThePidfd) {
  auto p = must(helper("sleep", {"20000"}).spawn());
  TT_ASSERT_OK(p.signal(SIGUSR1));
  EXPECT_EQ(must(p.wait()).signal(), SIGUSR1);
  auto again = p.signal(SIGUSR1);
  ASSERT_FALSE(again);
  TT_EXPECT_ERROR(again, std::errc::no_such_process);
}

TEST_F(Signals, SignalWholeGroup) {
  TT_ASSERT_OK(tether::set_child_subreaper(true));
  // sh starts a grandchild in the same group, prints its pid, and waits.
  auto p = must(Command("sh")
                    .args({"-c", "sleep 30 & echo $!; wait"})
                    .new_process_group()
                    .stdout_to(Stdio::pipe())
                    .spawn());
  std::string line(32, '\0');
  line.resize(
      must(tether::read_some(p.stdout_fd().get(), std::as_writable_bytes(std::span(line)), "sh")));
  pid_t grandchild = std::stoi(line);
  EXPECT_TRUE(pid_alive(grandchild));
  TT_ASSERT_OK(p.signal_group(SIGKILL));
  EXPECT_EQ(must(p.wait()).signal(), SIGKILL);
  // The grandchild, re-parented to us (subreaper), died with its group.
  auto orphan = must(tether::wait_any_child(10s));
  EXPECT_EQ(orphan.pid(), grandchild);
  EXPECT_EQ(orphan.signal(), SIGKILL);
  TT_ASSERT_OK(tether::set_child_subreaper(false));

  auto no_group = must(helper("exit", {"0"}).spawn());
  TT_EXPECT_ERROR(no_group.signal_group(SIGTERM), std::errc::invalid_argument);
  (void)no_group.wait();
}

TEST_F(Signals, SubreaperAdoptsOrphans) {
  TT_ASSERT_OK(tether::set_child_subreaper(true));
  EXPECT_TRUE(must(tether::is_child_subreaper()));
  auto out = must(helper("orphan", {"100"}).output());
  pid_t orphan = std::stoi(out.out);
  auto st = must(tether::wait_any_child(10s));
  EXPECT_EQ(st.pid(), orphan);
  EXPECT_EQ(st.code(), 7);
  TT_ASSERT_OK(tether::set_child_subreaper(false));
  EXPECT_FALSE(must(tether::is_child_subreaper()));
}

TEST_F(Signals, DieWithParent) {
  TT_ASSERT_OK(tether::set_child_subreaper(true));
  // The helper spawns a grandchild with die_with_parent(SIGKILL) and exits.
  auto out = must(helper("deathsig-parent").output());
  pid_t grandchild = std::stoi(out.out);
  auto st = must(tether::wait_any_child(10s));
  EXPECT_EQ(st.pid(), grandchild);
  EXPECT_EQ(st.signal(), SIGKILL);
  TT_ASSERT_OK(tether::set_child_subreaper(false));
}

// ---------------------------------------------------------------- drop policy

using Drop = Clean;

TEST_F(Drop, DefaultKillsAndReaps) {
  pid_t pid;
  {
    auto p = must(helper("sleep", {"20000"}).spawn());
    pid = p.pid();
    EXPECT_EQ(p.on_drop(), tether::OnDrop::kill);
  }
  EXPECT_FALSE(pid_alive(pid));
  EXPECT_FALSE(tether_test::has_children());
}

TEST_F(Drop, WaitPolicyLetsItFinish) {
  TempDir dir;
  {
    auto p = must(Command("sh")
                      .args({"-c", "sleep 0.2; echo done > " + (dir.path / "f").string()})
                      .on_drop(tether::OnDrop::wait)
                      .spawn());
  }
  EXPECT_TRUE(std::filesystem::exists(dir.path / "f"));
}

TEST_F(Drop, TerminatePolicySendsSigtermFirst) {
  TempDir dir;
  {
    auto p = must(Command("sh")
                      .args({"-c", "trap 'echo term > " + (dir.path / "f").string() +
                                       "; exit 0' TERM; echo up; while :; do sleep 0.05; done"})
                      .stdout_to(Stdio::pipe())
                      .on_drop(tether::OnDrop::terminate, 5s)
                      .spawn());
    char up[3];
    ASSERT_TRUE(
        tether::read_some(p.stdout_fd().get(), std::as_writable_bytes(std::span(up)), "sh"));
  }
  EXPECT_TRUE(std::filesystem::exists(dir.path / "f"));
}

// Not a Clean fixture: the reaper thread keeps one eventfd for the life of
// the process, by design.
TEST(DropDetach, DetachedChildIsReapedInTheBackground) {
  int fds_before = must(tether::count_open_fds());
  pid_t pid;
  {
    auto p = must(helper("sleep", {"100"}).on_drop(tether::OnDrop::detach).spawn());
    pid = p.pid();
  }
  // It keeps running, then the reaper thread reaps it: no zombie stays.
  bool gone = false;
  for (int i = 0; i < 4000 && !gone; ++i) {  // up to 20 s on a loaded machine
    gone = !tether_test::has_children();
    if (!gone) std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(gone) << "pid " << pid << " was not reaped";
  EXPECT_LE(must(tether::count_open_fds()), fds_before + 1);
}

TEST_F(Drop, MovedFromProcessIsEmpty) {
  auto p = must(helper("exit", {"0"}).spawn());
  tether::Process q = std::move(p);
  EXPECT_FALSE(p.valid());  // NOLINT(bugprone-use-after-move): documented state
  TT_EXPECT_ERROR(p.wait(), tether::errc::not_spawned);
  EXPECT_TRUE(must(q.wait()).success());
}

// ---------------------------------------------------------------- capture

using Capture = Clean;

TEST_F(Capture, FiftyMegabytesWithoutDeadlock) {
  constexpr std::size_t out_size = 50u << 20, err_size = 5u << 20;
  auto out =
      must(helper("spew", {std::to_string(out_size), std::to_string(err_size)}).output({}, 120s));
  ASSERT_EQ(out.out.size(), out_size);
  ASSERT_EQ(out.err.size(), err_size);
  for (std::size_t i = 0; i < out_size; i += 4093) {
    ASSERT_EQ(out.out[i], static_cast<char>('a' + (i / 7) % 26)) << i;
  }
  EXPECT_TRUE(out.status.success());
}

TEST_F(Capture, LargeInputAndOutputAtOnce) {
  // The child echoes as it reads: feeding all input before reading would
  // deadlock once both pipes are full.
  std::string input(20u << 20, 'x');
  for (std::size_t i = 0; i < input.size(); i += 1000) input[i] = static_cast<char>('0' + i % 10);
  auto out = must(helper("echo").output(input, 120s));
  EXPECT_TRUE(out.out == input);
  EXPECT_TRUE(out.status.success());
}

TEST_F(Capture, ChildThatStopsReadingIsNotAnError) {
  auto out = must(Command("head").args({"-c", "5"}).output(std::string(1 << 20, 'y'), 30s));
  EXPECT_EQ(out.out, "yyyyy");
}

TEST_F(Capture, DeadlineKillsTheChild) {
  auto out = helper("sleep", {"20000"}).output({}, 100ms);
  ASSERT_FALSE(out);
  TT_EXPECT_ERROR(out, std::errc::timed_out);
  EXPECT_FALSE(tether_test::has_children());
}

TEST_F(Capture, InputWithoutStdinPipeIsAnError) {
  auto p = must(helper("exit", {"0"}).stdin_from(Stdio::null()).spawn());
  auto r = p.communicate("data");
  ASSERT_FALSE(r);
  TT_EXPECT_ERROR(r, std::errc::invalid_argument);
  (void)p.wait();
}

// ---------------------------------------------------------------- the reaper thread

// Runs under TSan in CI (tools/test.sh). The children come from fork(), which
// TSan follows; a clone(CLONE_VM) child would run TSan's interceptors on our
// memory and confuse its bookkeeping.
TEST(Reaper, ConcurrentDetachesAreAllReaped) {
  std::vector<std::thread> threads;
  threads.reserve(2);
  std::atomic<int> failures{0};
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        // The child only calls _exit: safe although threads run.
        auto child = tether::fork([]() -> int { _exit(0); }, {.allow_threads = true});
        if (!child) {
          ++failures;
          continue;
        }
        child->detach();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  bool all_reaped = false;
  for (int i = 0; i < 2000 && !all_reaped; ++i) {
    all_reaped = !tether_test::has_children();
    if (!all_reaped) std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(all_reaped) << "the reaper left zombies";
}
