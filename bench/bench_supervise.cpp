// The worker supervisor against runit, s6 and supervisord, in the same run
// on the same machine (the peers from Debian's packages, used when found).
//
// Every tool supervises the same N services: a shell script that writes its
// pid into <base>/pids/<service> and execs `sleep infinity`. "Running" is
// seen the same way for every tool — the pid file written (inotify
// IN_CLOSE_WRITE) — not through each tool's own status format; so the
// shell's start-up is in every figure alike.
//
//   bench_supervise [--quick] [--count N] [runit] [s6] [supervisord] [tether]
//
// Figures: time to start N services; supervisor PSS per service; CPU used by
// the supervisors while idle; how long after the command a stop and a start
// take effect (the worker dead / the new one running); when the blocking
// form of stop returns; how long after kill -9 a healthy worker runs again.
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "harness.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

double ms_since(clk::time_point t0) {
  return std::chrono::duration<double, std::milli>(clk::now() - t0).count();
}

// What die() must take down: the tool being measured.
std::function<void()> on_die;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "bench_supervise: %s\n", why.c_str());
  if (auto cleanup = std::exchange(on_die, nullptr)) cleanup();
  std::exit(1);
}

// posix_spawn, not tether: the harness must not depend on what it measures.
pid_t start(const std::vector<std::string>& argv, const std::vector<std::string>& env_add = {},
            bool quiet = true) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) env_store.emplace_back(*e);
  for (const auto& e : env_add) env_store.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (quiet) {
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = 0;
  if (posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), envp.data()) != 0) {
    die("cannot start " + argv[0]);
  }
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

int wait_pid(pid_t pid) {
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Runs a command and captures its stdout.
std::string capture(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  std::string cmd;
  for (const auto& e : env) cmd += e + " ";
  for (const auto& a : argv) cmd += "'" + a + "' ";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) die("popen");
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  if (::pclose(p) != 0) die("failed: " + cmd);
  return out;
}

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

bool wait_readable(int fd, double timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout_ms)) == 1;
}

// Pid files written by the services: inotify on the directory.
class PidFiles {
 public:
  explicit PidFiles(fs::path dir) : dir_(std::move(dir)) {
    fs::create_directories(dir_);
    fd_ = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (fd_ < 0 || inotify_add_watch(fd_, dir_.c_str(), IN_CLOSE_WRITE) < 0) die("inotify");
  }
  ~PidFiles() { ::close(fd_); }
  // Names written since the last call, waiting up to `timeout_ms` for one.
  std::vector<std::string> next(double timeout_ms) {
    std::vector<std::string> names;
    if (!wait_readable(fd_, timeout_ms)) return names;
    alignas(inotify_event) char buf[65536];
    ssize_t n;
    while ((n = ::read(fd_, buf, sizeof buf)) > 0) {
      for (char* p = buf; p < buf + n;) {
        auto* ev = reinterpret_cast<inotify_event*>(p);
        if (ev->len) names.emplace_back(ev->name);
        p += sizeof(inotify_event) + ev->len;
      }
    }
    return names;
  }
  // Waits until every name in `want` was written (in any order).
  bool wait_all(std::set<std::string> want, double timeout_ms) {
    auto t0 = clk::now();
    while (!want.empty()) {
      double left = timeout_ms - ms_since(t0);
      if (left <= 0) return false;
      for (const auto& n : next(left)) want.erase(n);
    }
    return true;
  }
  pid_t pid_of(const std::string& name) const {
    std::ifstream in(dir_ / name);
    pid_t pid = 0;
    in >> pid;
    return pid;
  }

 private:
  fs::path dir_;
  int fd_ = -1;
};

long pss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("Pss:")) return std::stol(line.substr(4));
  }
  return 0;
}

// utime + stime in clock ticks.
long cpu_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), {});
  auto close = s.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(s.substr(close + 2));
  std::string f;
  long ut = 0, st = 0;
  for (int i = 3; i <= 15; ++i) {
    rest >> f;
    if (i == 14) ut = std::stol(f);
    if (i == 15) st = std::stol(f);
  }
  return ut + st;
}

std::vector<pid_t> children_named(pid_t parent, const std::string& comm) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream in(e.path() / "stat");
    std::string s((std::istreambuf_iterator<char>(in)), {});
    auto open = s.find('('), close = s.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    if (s.substr(open + 1, close - open - 1) != comm) continue;
    std::istringstream rest(s.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) out.push_back(std::stoi(name));
  }
  return out;
}

struct Figures {
  double start_s = 0;
  double pss_kib = 0;
  double idle_cpu_ms = 0;
  std::vector<double> stop_effect, start_effect, stop_blocking, restart_after_kill;
};

// One tool: how to start N services, the commands, and the teardown.
struct Tool {
  std::string name;
  fs::path base;
  int n = 0;
  pid_t daemon = 0;                // runsvdir, s6-svscan, supervisord
  std::vector<pid_t> supervisors;  // whose PSS and CPU count
  std::vector<std::string> ids;    // tether: worker ids
  std::string tether;              // path of the tether command

  std::string svc(int i) const {
    return name == "tether" ? fmt::format("s-{}", i) : fmt::format("s{}", i);
  }
  fs::path svdir(int i) const { return base / "sv" / svc(i); }

  void write_services() {
    for (int i = 1; i <= n && name != "tether"; ++i) {
      fs::create_directories(svdir(i));
      std::ofstream run(svdir(i) / "run");
      run << "#!/bin/sh\necho $$ > " << (base / "pids" / svc(i)).string()
          << "\nexec sleep infinity\n";
      run.close();
      fs::permissions(svdir(i) / "run", fs::perms(0755));
    }
    if (name == "tether") {
      std::ofstream run(base / "run");
      run << "#!/bin/sh\necho $$ > " << (base / "pids").string()
          << "/$TETHER_WORKER_NAME\nexec sleep infinity\n";
      run.close();
      fs::permissions(base / "run", fs::perms(0755));
    }
    if (name == "supervisord") {
      std::ofstream conf(base / "supervisord.conf");
      conf << "[supervisord]\nnodaemon=true\nlogfile=" << (base / "supervisord.log").string()
           << "\npidfile=" << (base / "supervisord.pid").string()
           << "\n[unix_http_server]\nfile=" << (base / "sock").string()
           << "\n[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = "
              "supervisor.rpcinterface:make_main_rpcinterface\n[supervisorctl]\nserverurl=unix://"
           << (base / "sock").string() << "\n";
      for (int i = 1; i <= n; ++i) {
        conf << "[program:" << svc(i) << "]\ncommand=" << (svdir(i) / "run").string()
             << "\nautorestart=true\nstartsecs=0\nstopsignal=TERM\n";
      }
    }
  }

  std::vector<std::string> env() const { return {"TETHER_DIR=" + (base / "state").string()}; }

  void launch() {
    if (name == "runit") daemon = start({"runsvdir", "-P", (base / "sv").string()});
    if (name == "s6") daemon = start({"s6-svscan", (base / "sv").string()});
    if (name == "supervisord") {
      daemon = start({"supervisord", "-c", (base / "supervisord.conf").string()});
    }
    if (name == "tether") {
      fs::create_directories(base / "state");
      fs::permissions(base / "state", fs::perms(0700));
      auto out = capture({tether, "open", "--count", std::to_string(n), "--name", "s", "--restart",
                          "always", "--json", "--", (base / "run").string()},
                         env());
      auto j = nlohmann::json::parse(out);
      if (n == 1) j = nlohmann::json::array({j});
      for (const auto& w : j) {
        ids.push_back(w["id"]);
        supervisors.push_back(w["supervisor_pid"]);
      }
    }
  }

  void find_supervisors() {
    if (name == "runit") supervisors = children_named(daemon, "runsv");
    if (name == "s6") supervisors = children_named(daemon, "s6-supervise");
    if (name == "supervisord") supervisors = {daemon};
  }

  std::string key(int i) const {
    return name == "tether" ? ids[static_cast<std::size_t>(i - 1)] : svc(i);
  }

  std::vector<std::string> stop_cmd(int i, bool blocking) const {
    std::string d = svdir(i).string();
    if (name == "runit") {
      return blocking ? std::vector<std::string>{"sv", "-w", "10", "-v", "down", d}
                      : std::vector<std::string>{"sv", "down", d};
    }
    if (name == "s6") {
      return blocking ? std::vector<std::string>{"s6-svc", "-wd", "-d", d}
                      : std::vector<std::string>{"s6-svc", "-d", d};
    }
    if (name == "supervisord") {
      return {"supervisorctl", "-c", (base / "supervisord.conf").string(), "stop", svc(i)};
    }
    return blocking ? std::vector<std::string>{tether, "stop", key(i)}
                    : std::vector<std::string>{tether, "stop", "--no-wait", key(i)};
  }

  std::vector<std::string> start_cmd(int i) const {
    std::string d = svdir(i).string();
    if (name == "runit") return {"sv", "up", d};
    if (name == "s6") return {"s6-svc", "-u", d};
    if (name == "supervisord") {
      return {"supervisorctl", "-c", (base / "supervisord.conf").string(), "start", svc(i)};
    }
    return {tether, "start", "--no-wait", key(i)};
  }

  void teardown(PidFiles& pids) {
    std::vector<pid_t> workers;
    for (int i = 1; i <= n; ++i) workers.push_back(pids.pid_of(svc(i)));
    if (name == "runit") ::kill(daemon, SIGHUP);  // runsvdir: TERM to every runsv, which stop
    if (name == "s6") ::kill(daemon, SIGTERM);
    if (name == "supervisord") ::kill(daemon, SIGTERM);
    if (name == "tether") {
      for (const auto& id : ids) {
        int fd =
            ::open((base / "state" / id / "control").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
          (void)!::write(fd, "exit\n", 5);
          ::close(fd);
        }
      }
      for (pid_t s : supervisors) {
        int fd = pidfd_open(s);
        if (fd >= 0) {
          wait_readable(fd, 30000);
          ::close(fd);
        }
      }
    }
    if (daemon > 0) {
      int fd = pidfd_open(daemon);
      if (!wait_readable(fd, 30000)) ::kill(daemon, SIGKILL);
      ::close(fd);
      wait_pid(daemon);
    }
    // Whatever a tool left behind (s6 leaves its services' processes when
    // killed this way) is not to outlive the benchmark.
    std::this_thread::sleep_for(200ms);
    int left = 0;
    for (pid_t w : workers) {
      std::ifstream cmd("/proc/" + std::to_string(w) + "/cmdline");
      std::string c((std::istreambuf_iterator<char>(cmd)), {});
      if (c.starts_with(std::string("sleep\0infinity", 14))) {
        ::kill(w, SIGKILL);
        ++left;
      }
    }
    if (left > 0)
      fmt::print(stderr, "# {}: {} workers outlived the teardown (killed)\n", name, left);
    std::error_code ec;
    fs::remove_all(base, ec);
  }
};

Figures measure(Tool& t, int reps) {
  Figures f;
  fs::remove_all(t.base);
  fs::create_directories(t.base);
  PidFiles pids(t.base / "pids");
  t.write_services();
  std::set<std::string> all;
  for (int i = 1; i <= t.n; ++i) all.insert(t.svc(i));

  on_die = [&] { t.teardown(pids); };
  auto t0 = clk::now();
  t.launch();
  if (!pids.wait_all(all, 180000)) die(t.name + ": not all services started");
  f.start_s = ms_since(t0) / 1000;

  std::this_thread::sleep_for(1500ms);  // every worker now counts as healthy
  t.find_supervisors();
  long pss = 0;
  for (pid_t s : t.supervisors) pss += pss_kib(s);
  if (t.daemon > 0 && t.name != "supervisord") pss += pss_kib(t.daemon);  // runsvdir, s6-svscan
  f.pss_kib = static_cast<double>(pss) / t.n;

  long cpu0 = 0, cpu1 = 0;
  std::vector<pid_t> watched = t.supervisors;
  if (t.daemon > 0 && t.name != "supervisord") watched.push_back(t.daemon);
  for (pid_t s : watched) cpu0 += cpu_ticks(s);
  std::this_thread::sleep_for(3s);
  for (pid_t s : watched) cpu1 += cpu_ticks(s);
  f.idle_cpu_ms =
      static_cast<double>(cpu1 - cpu0) * 1000.0 / static_cast<double>(sysconf(_SC_CLK_TCK));

  const int svc = 1;
  for (int r = 0; r < reps; ++r) {
    for (bool blocking : {false, true}) {
      pid_t worker = pids.pid_of(t.svc(svc));
      int fd = pidfd_open(worker);
      if (fd < 0) {
        die(fmt::format("{}: the pid file of {} says {}, and no such process runs ({})", t.name,
                        t.svc(svc), worker, std::strerror(errno)));
      }
      auto s0 = clk::now();
      pid_t cmd = start(t.stop_cmd(svc, blocking), t.env());
      if (!blocking) {
        if (!wait_readable(fd, 30000)) {
          die(fmt::format("{}: stop had no effect: worker pid {} still runs 30 s later", t.name,
                          worker));
        }
        f.stop_effect.push_back(ms_since(s0));
        wait_pid(cmd);
      } else {
        wait_pid(cmd);
        f.stop_blocking.push_back(ms_since(s0));
        if (!wait_readable(fd, 30000)) die(t.name + ": blocking stop returned early");
      }
      ::close(fd);
      pids.next(0);  // forget older events
      auto u0 = clk::now();
      pid_t up = start(t.start_cmd(svc), t.env());
      if (!pids.wait_all({t.svc(svc)}, 30000)) die(t.name + ": start had no effect");
      f.start_effect.push_back(ms_since(u0));
      wait_pid(up);
    }
  }
  for (int r = 0; r < reps; ++r) {
    std::this_thread::sleep_for(1200ms);  // healthy: ran for more than a second
    pid_t worker = pids.pid_of(t.svc(svc));
    pids.next(0);
    auto k0 = clk::now();
    ::kill(worker, SIGKILL);
    if (!pids.wait_all({t.svc(svc)}, 30000)) die(t.name + ": killed worker not restarted");
    f.restart_after_kill.push_back(ms_since(k0));
  }
  on_die = nullptr;
  t.teardown(pids);
  return f;
}

// Where every tool's service and state directories go: $BENCH_DIR, else
// /dev/shm, a tmpfs, where they live on a real system (/run/runit, s6's
// scan directory on /run, tether's /run/tether or $XDG_RUNTIME_DIR), else
// the temporary directory. On a disk file system (ext4 here), creating a
// few files per service costs more than the supervisor does: ext4's inode
// allocation searches the bitmaps past recently deleted inodes, and the
// figures swing 3x from run to run (measured: tether open --count 500 took
// 0.48-1.4 s on ext4, 0.35 s on tmpfs).
fs::path work_dir() {
  if (const char* d = std::getenv("BENCH_DIR")) return d;
  // The run scripts are executed from there: not on a noexec mount (a
  // container's /dev/shm often is).
  struct statfs fs_info {};
  struct statvfs vfs {};
  if (::statfs("/dev/shm", &fs_info) == 0 && fs_info.f_type == TMPFS_MAGIC &&
      ::statvfs("/dev/shm", &vfs) == 0 && (vfs.f_flag & ST_NOEXEC) == 0 &&
      ::access("/dev/shm", W_OK) == 0) {
    return "/dev/shm";
  }
  return fs::temp_directory_path();
}

// tether as a user starts it: `tether open --count N -- sleep infinity`, no
// shell in front; `open` returns once every worker runs (each supervisor
// reports after its worker's exec succeeded). The other tools need a run
// script, so their figure above is already their natural one.
double tether_direct_start(const std::string& tether, int n) {
  fs::path base = work_dir() / fmt::format("bench-supervise-direct-{}", getpid());
  fs::create_directories(base);
  fs::permissions(base, fs::perms(0700));
  std::vector<std::string> env = {"TETHER_DIR=" + base.string()};
  auto t0 = clk::now();
  auto out = capture({tether, "open", "--count", std::to_string(n), "--name", "d", "--json", "--",
                      "sleep", "infinity"},
                     env);
  double s = ms_since(t0) / 1000;
  auto j = nlohmann::json::parse(out);
  if (n == 1) j = nlohmann::json::array({j});
  std::vector<int> fds;
  for (const auto& w : j) {
    std::string id = w["id"];
    fds.push_back(pidfd_open(w["supervisor_pid"].get<pid_t>()));
    int fd = ::open((base / id / "control").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
      (void)!::write(fd, "exit\n", 5);
      ::close(fd);
    }
  }
  for (int fd : fds) {
    if (fd >= 0) wait_readable(fd, 30000), ::close(fd);
  }
  std::error_code ec;
  fs::remove_all(base, ec);
  return s;
}

double median(std::vector<double> v) {
  return v.empty() ? 0 : bench::summarize(std::move(v)).median;
}

// A set's file against --count, and `list` of N workers with their CPU and
// memory: the same N `sleep infinity` workers, started in turns (open, up,
// open, up, …) so the machine's drift falls on both alike. Every command
// goes through popen, so each figure includes one `sh -c` (about 1 ms).
void tether_set_rows(const std::string& tether, int n, int pairs) {
  fs::path base = work_dir() / fmt::format("bench-supervise-set-{}", getpid());
  fs::create_directories(base / "state");
  fs::create_directories(base / "config");
  fs::permissions(base, fs::perms(0700));
  fs::permissions(base / "state", fs::perms(0700));
  fs::permissions(base / "config", fs::perms(0700));
  std::string file = (base / "tether.toml").string();
  std::ofstream(file) << fmt::format(
      "name = \"bench\"\n[w]\ncommand = [\"sleep\", \"infinity\"]\ncount = {}\n", n);
  std::vector<std::string> env = {"TETHER_DIR=" + (base / "state").string(),
                                  "TETHER_CONFIG_DIR=" + (base / "config").string()};
  std::vector<double> open_s, up_s, list_ms, json_ms;
  for (int p = 0; p < pairs; ++p) {
    auto t0 = clk::now();
    capture(
        {tether, "open", "--count", std::to_string(n), "--name", "o", "--", "sleep", "infinity"},
        env);
    open_s.push_back(ms_since(t0) / 1000);
    capture({tether, "exit", "all"}, env);
    t0 = clk::now();
    capture({tether, "up", "-f", file}, env);
    up_s.push_back(ms_since(t0) / 1000);
    for (int k = 0; k < 5; ++k) {
      t0 = clk::now();
      capture({tether, "list"}, env);
      list_ms.push_back(ms_since(t0));
      t0 = clk::now();
      capture({tether, "list", "--json"}, env);
      json_ms.push_back(ms_since(t0));
    }
    capture({tether, "down", "-f", file}, env);
  }
  fmt::print("\n| tether, {} workers ({} turns, median) | |\n|---|---:|\n", n, pairs);
  fmt::print("| `open --count {}` (s) | {:.3f} |\n", n, median(open_s));
  fmt::print("| `up` of a file with `count = {}` (s) | {:.3f} |\n", n, median(up_s));
  fmt::print("| up / open | {:.2f} |\n", median(up_s) / median(open_s));
  fmt::print("| `list` with CPU, RSS, PSS (ms) | {:.1f} |\n", median(list_ms));
  fmt::print("| `list --json` (ms) | {:.1f} |\n", median(json_ms));
  std::error_code ec;
  fs::remove_all(base, ec);
}

bool on_path(const std::string& prog) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    if (::access((fs::path(d) / prog).c_str(), X_OK) == 0) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = bench::quick_mode(argc, argv);
  int n = quick ? 10 : 500, reps = quick ? 1 : 10;
  std::vector<std::string> chosen;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--count" && i + 1 < argc) {
      n = std::atoi(argv[++i]);
    } else if (!a.starts_with("-")) {
      chosen.push_back(a);
    }
  }
  if (chosen.empty()) chosen = {"runit", "s6", "supervisord", "tether"};
  fs::path self = fs::read_symlink("/proc/self/exe");
  std::string tether = (self.parent_path().parent_path() / "tether").string();
  if (const char* t = std::getenv("TETHER_BIN")) tether = t;

  fmt::print("# supervisor benchmark ({})\n", bench::machine_description());
  fmt::print(
      "# {} services of `sh` writing a pid file then `exec sleep infinity`; {} repetitions "
      "of each command (median); their directories in {}\n\n",
      n, reps, work_dir().string());
  std::map<std::string, Figures> results;
  std::vector<std::string> order;
  for (const auto& name : chosen) {
    const char* probe = name == "runit"         ? "runsvdir"
                        : name == "s6"          ? "s6-svscan"
                        : name == "supervisord" ? "supervisord"
                                                : nullptr;
    if (probe && !on_path(probe)) {
      fmt::print("# {}: not installed (Debian package {}), skipped\n", name,
                 name == "supervisord" ? "supervisor" : name);
      continue;
    }
    Tool t;
    t.name = name;
    t.base = work_dir() / fmt::format("bench-supervise-{}-{}", name, getpid());
    t.n = n;
    t.tether = tether;
    results[name] = measure(t, reps);
    order.push_back(name);
    std::fflush(stdout);
  }
  auto row = [&](const char* what, auto get, const char* unit) {
    fmt::print("| {} |", what);
    for (const auto& name : order)
      fmt::print(" {:.{}f} |", get(results[name]), unit[0] == 's' ? 3 : 1);
    if (results.count("tether") && results.count("runit")) {
      double r = get(results["runit"]);
      fmt::print(" {} |", r > 0 ? fmt::format("{:.2f}", get(results["tether"]) / r) : "-");
    }
    fmt::print("\n");
  };
  fmt::print("| figure |");
  for (const auto& name : order) fmt::print(" {} |", name);
  if (results.count("tether") && results.count("runit")) fmt::print(" tether / runit |");
  fmt::print("\n|---|");
  for (std::size_t i = 0; i < order.size(); ++i) fmt::print("---:|");
  if (results.count("tether") && results.count("runit")) fmt::print("---:|");
  fmt::print("\n");
  row(
      fmt::format("start {} services (s)", n).c_str(), [](const Figures& f) { return f.start_s; },
      "s");
  row(
      "supervisor PSS per service (KiB)", [](const Figures& f) { return f.pss_kib; }, "k");
  row(
      "supervisor CPU while idle, 3 s (ms)", [](const Figures& f) { return f.idle_cpu_ms; }, "m");
  row(
      "stop takes effect (ms)", [](const Figures& f) { return median(f.stop_effect); }, "m");
  row(
      "start takes effect (ms)", [](const Figures& f) { return median(f.start_effect); }, "m");
  row(
      "blocking stop returns (ms)", [](const Figures& f) { return median(f.stop_blocking); }, "m");
  row(
      "killed healthy worker running again (ms)",
      [](const Figures& f) { return median(f.restart_after_kill); }, "m");
  if (results.count("tether")) {
    double direct = tether_direct_start(tether, n);
    fmt::print(
        "\ntether as a user starts it (`tether open --count {} -- sleep infinity`, no shell; "
        "open returns when all run): {:.3f} s",
        n, direct);
    if (results.count("runit")) {
      fmt::print(" = {:.2f} x runit's start above", direct / results["runit"].start_s);
    }
    fmt::print("\n");
  }
  if (results.count("tether")) tether_set_rows(tether, n, quick ? 1 : 3);
  fmt::print(
      "\nblocking stop: runit `sv -w 10 -v down`, s6 `s6-svc -wd -d`, `supervisorctl stop`, "
      "`tether stop`.\n");
  return 0;
}
