// One worker's supervisor: a single poll loop over the control FIFOs, the
// worker's pidfd, its output pipe, a signalfd and a timerfd. It never
// busy-waits: with nothing to do it sleeps in poll(2) with no timeout.
//
// What it does is decided by one table (table.hpp): the loop turns what
// its descriptors say into events, asks the table, and carries out the
// actions it returns. Everything is reached relative to descriptors held
// since the state directory was checked.
#include <fcntl.h>
#include <linux/fs.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "internal.hpp"
#include "table.hpp"
#include "tether/channel/fifo.hpp"
#include "tether/process.hpp"
#include "tether/supervise/launch.hpp"

namespace tether {

namespace sd = supervise_detail;
namespace fs = std::filesystem;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;
using sd::Event;

namespace {

// The signal dnotify raises for a change in the worker's directory.
int dir_signal() {
  return SIGRTMIN + 1;
}

std::string timestamp() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  ::gmtime_r(&ts.tv_sec, &t);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", t.tm_year + 1900, t.tm_mon + 1,
                     t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000000);
}

// Printable, bounded form of untrusted bytes for the log.
std::string sanitize(std::string_view s, std::size_t max = 80) {
  std::string out;
  for (char c : s.substr(0, max)) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      out += fmt::format("\\x{:02x}", u);
    }
  }
  if (s.size() > max) out += fmt::format("… ({} bytes)", s.size());
  return out;
}

// A path that reaches `name` inside the held directory `dirfd`, for the
// path-based types (Fifo), without resolving the directory's path again.
std::string via(int dirfd, std::string_view name) {
  return fmt::format("/proc/self/fd/{}/{}", dirfd, name);
}

// A timerfd that fires every `interval` (10 ms at least), from now on.
Result<void> arm_every(int fd, milliseconds interval) {
  auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::max(interval, milliseconds(10)));
  itimerspec every{};
  every.it_value.tv_sec = every.it_interval.tv_sec = static_cast<time_t>(ns.count() / 1000000000);
  every.it_value.tv_nsec = every.it_interval.tv_nsec = static_cast<long>(ns.count() % 1000000000);
  if (::timerfd_settime(fd, 0, &every, nullptr) != 0) return fail(errno, "timerfd_settime");
  return {};
}

class Supervisor {
 public:
  Supervisor(const StateDir& dir, const SupervisorSpec& spec)
      : spec_(spec),
        state_fd_(dir.fd()),
        final_(dir.worker_path(spec.id)),
        tmp_name_("." + spec.id + ".new") {}
  ~Supervisor() {
    if (created_ && !renamed_) (void)sd::remove_tree(state_fd_, tmp_name_);
  }

  int run(int report_fd);

 private:
  Result<void> setup();
  Result<void> make_fifo(int dirfd, const char* name, FifoReader& reader, bool keep_listening);
  Result<void> start_worker();
  void worker_ended(const ExitStatus& status);
  void dispatch(Event e);
  bool perform(std::uint16_t actions);
  void conclude(std::uint16_t actions);
  sd::Facts facts() const;
  void read_control(int fd, LineReader* lines);
  void command(std::string_view line);
  void act(const sd::ControlCommand& c);
  void send_signal(int sig);
  void bad_command(std::string_view why, std::string_view what);
  void deliver(std::string_view message);
  void read_output(bool final_read);
  void reap_orphans();
  void kill_strays();
  void arm_timer(milliseconds in);
  void disarm_timer();
  void write_status();
  void event(std::string_view text);
  void log_line(std::string_view text);
  void rotate_log();
  void report(const launch::Report& r);
  void report_error(std::string text);
  void finish();
  bool directory_lost();
  void check_memory();

  SupervisorSpec spec_;
  int state_fd_ = -1;
  fs::path final_;
  std::string tmp_name_;
  bool created_ = false, renamed_ = false, dir_removed_ = false, name_claimed_ = false;
  Fd dirfd_, svdirfd_, lock_;
  FifoReader control_, svcontrol_, ok_;
  struct stat dir_st_ {
  }, control_st_{}, lock_st_{};
  sd::RecordFile status_, svstatus_;
  Fd sigfd_, timer_, check_, memory_, log_;
  std::uint64_t log_size_ = 0;
  int report_fd_ = -1;

  std::optional<Process> proc_;
  std::uint64_t pid_start_ = 0;
  Fd in_, out_, ready_;  // the worker's stdin (ours to write), output, readiness
  LineReader out_lines_{sd::kMaxCommand, LineReader::Overlong::split};
  LineReader control_lines_{sd::kMaxCommand - 1, LineReader::Overlong::discard};
  steady::time_point started_{};
  std::int64_t started_ms_ = 0;

  WorkerState state_ = WorkerState::starting;
  Want want_ = Want::up;
  bool paused_ = false, got_term_ = false;
  bool done_ = false;
  std::int64_t since_ms_ = 0;
  timespec since_ts_{};
  int restarts_ = 0;
  std::uint64_t commands_ = 0;  // control commands acted on (WorkerInfo::commands)
  milliseconds backoff_{0};
  std::optional<ExitStatus> last_exit_;
  bool last_success_ = false, last_healthy_ = false;
  std::string failure_;       // why the first start failed, for tether open
  std::string over_memory_;   // why the running worker is being stopped, when over its limit
  bool memory_stop_ = false;  // the stop under way is the memory limit's (Facts::memory_stop)

  // Bad-command logging is rate-limited: at most 10 lines a second, then one
  // summary line a second at most, however the flood arrives.
  std::int64_t bad_second_ = 0, summary_second_ = 0;
  int bad_in_second_ = 0, bad_suppressed_ = 0;
};

// ---------------------------------------------------------------- setup

Result<void> Supervisor::make_fifo(int dirfd, const char* name, FifoReader& reader,
                                   bool keep_listening) {
  auto fifo = Fifo::create(via(dirfd, name), 0600);
  if (!fifo) return std::unexpected(fifo.error());
  fifo->release();  // it goes with the directory
  auto r =
      fifo->open_reader(Deadline::immediate(),
                        FifoReadOptions{.keep_listening = keep_listening, .nonblocking = true});
  if (!r) return std::unexpected(r.error());
  reader = std::move(*r);
  return {};
}

Result<void> Supervisor::setup() {
  // Built under a hidden name and renamed when complete, so `tether list`
  // never sees (and `--prune` never removes) a half-made directory.
  std::string shown = (final_.parent_path() / tmp_name_).string();
  if (::mkdirat(state_fd_, tmp_name_.c_str(), 0700) != 0) return fail(errno, "create " + shown);
  created_ = true;
  auto dir = sd::open_worker_dir(state_fd_, tmp_name_);
  if (!dir) return std::unexpected(dir.error());
  dirfd_ = std::move(*dir);
  if (::fchmod(dirfd_.get(), 0700) != 0) return fail(errno, "create " + shown);
  lock_.reset(::openat(dirfd_.get(), sd::kLockFile, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!lock_) return fail(errno, "create the lock of " + shown);
  // Every file exactly 0600 whatever the umask: it can only have narrowed
  // the mode, and widening to what was asked gives away nothing.
  if (::fchmod(lock_.get(), 0600) != 0) return fail(errno, "create the lock of " + shown);
  if (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) return fail(errno, "lock " + shown);
  if (auto r = make_fifo(dirfd_.get(), sd::kControlFifo, control_, true); !r) return r;
  // The runit/daemontools view: supervise/control takes single letters,
  // supervise/ok opens for writing only while we are alive (svok, sv).
  if (::mkdirat(dirfd_.get(), "supervise", 0700) != 0) return fail(errno, "create supervise/");
  svdirfd_.reset(
      ::openat(dirfd_.get(), "supervise", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!svdirfd_ || ::fchmod(svdirfd_.get(), 0700) != 0) return fail(errno, "open supervise/");
  if (auto r = make_fifo(svdirfd_.get(), "control", svcontrol_, true); !r) return r;
  if (auto r = make_fifo(svdirfd_.get(), "ok", ok_, false); !r) return r;  // never read
  log_.reset(::openat(dirfd_.get(), sd::kLogFile,
                      O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!log_ || ::fchmod(log_.get(), 0600) != 0) return fail(errno, "create the log of " + shown);
  // Records are reserved now: a full disk later cannot stop a status change.
  auto status = sd::RecordFile::create(dirfd_.get(), sd::kStatusFile, sd::kStatusSpare,
                                       sd::kStatusReserve, true);
  if (!status) return std::unexpected(status.error());
  status_ = std::move(*status);
  auto svstatus = sd::RecordFile::create(svdirfd_.get(), "status", ".status.spare", 20, false);
  if (!svstatus) return std::unexpected(svstatus.error());
  svstatus_ = std::move(*svstatus);
  if (::fstat(dirfd_.get(), &dir_st_) != 0 || ::fstat(control_.fd(), &control_st_) != 0 ||
      ::fstat(lock_.get(), &lock_st_) != 0) {
    return fail(errno, "stat " + shown);
  }

  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGCHLD, dir_signal()}) sigaddset(&set, s);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  sigfd_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd_) return fail(errno, "signalfd");
  timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  check_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer_ || !check_) return fail(errno, "timerfd_create");
  // Orphans of the worker are re-parented to us, so we reap them.
  if (auto r = set_child_subreaper(true); !r) return r;

  // The first record is there before the directory appears, and so is the
  // spec it runs (what `tether save` records; the environment it holds is
  // why it is 0600, like everything here).
  {
    Fd spec(::openat(dirfd_.get(), sd::kSpecFile,
                     O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!spec || ::fchmod(spec.get(), 0600) != 0) return fail(errno, "create the spec of " + shown);
    if (auto w = write_all(spec.get(), launch::encode_spec(spec_) + "\n", "the spec of " + shown);
        !w) {
      return w;
    }
  }
  write_status();
  if (spec_.unique_name) {
    if (auto r = sd::claim_name(state_fd_, spec_.name, spec_.id); !r) return r;
    name_claimed_ = true;
  }
  if (::renameat2(state_fd_, tmp_name_.c_str(), state_fd_, spec_.id.c_str(), RENAME_NOREPLACE) !=
      0) {
    return fail(errno, "create " + final_.string());
  }
  renamed_ = true;
  // A supervisor whose directory is removed or tampered with (rm -r, a
  // file over its FIFO) can no longer be reached by any client: it then
  // stops its worker and exits. dnotify, not inotify: an inotify instance
  // per supervisor would run into fs.inotify.max_user_instances (128 per
  // user by default) at the 128th worker. Its signals arrive through the
  // signalfd like the others.
  if (::fcntl(dirfd_.get(), F_SETSIG, dir_signal()) != 0 ||
      ::fcntl(dirfd_.get(), F_NOTIFY, DN_DELETE | DN_RENAME | DN_CREATE | DN_MULTISHOT) != 0) {
    return fail(errno, "watch " + final_.string() + " (F_NOTIFY)");
  }
  // A move of the directory itself raises nothing inside it (no dnotify
  // event on the moved directory; measured), and a watch on the state
  // directory would wake every supervisor at every worker's start and exit:
  // N^2 wake-ups, which tripled the time to start 200 workers. So the
  // name is checked on a slow timer instead (--check-interval, 60 s).
  if (auto r = arm_every(check_.get(), spec_.dir_check); !r) return r;
  // A memory limit is checked on a timer of its own: the worker's memory
  // grows without any event a supervisor could wait for (short of a
  // cgroup's memory.events, which needs a delegated cgroup v2 hierarchy).
  // The check reads /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN):
  // without it the limit could not be kept, and the start says so.
  if (spec_.memory_limit > 0) {
    auto children = fmt::format("/proc/self/task/{}/children", ::getpid());
    if (::access(children.c_str(), R_OK) != 0) {
      return fail(errno, "read " + children +
                             " (the memory limit needs it: a kernel with CONFIG_PROC_CHILDREN)");
    }
    memory_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!memory_) return fail(errno, "timerfd_create");
    if (auto r = arm_every(memory_.get(), spec_.memory_check); !r) return r;
  }
  return {};
}

// ---------------------------------------------------------------- the worker

Result<void> Supervisor::start_worker() {
  auto in = make_pipe();
  auto out = make_pipe();
  if (!in || !out) return std::unexpected(!in ? in.error() : out.error());
  Command cmd(spec_.command.front());
  for (std::size_t i = 1; i < spec_.command.size(); ++i) cmd.arg(spec_.command[i]);
  cmd.new_session().die_with_parent(SIGKILL);  // it stops with its supervisor: never runs twice
  if (spec_.tty) {
    // The terminal is its stdin, stdout and stderr, and its controlling
    // terminal; what we write is not echoed back into the log.
    cmd.pty(PtyOptions{.echo = false});
  } else {
    cmd.stdin_from(Stdio::fd(in->first.get()))
        .stdout_to(Stdio::fd(out->second.get()))
        .stderr_to(Stdio::merge_into_stdout());
  }
  cmd.env("TETHER_WORKER_ID", spec_.id)
      .env("TETHER_WORKER_NAME", spec_.name)
      .env("TETHER_WORKER_DIR", final_.string())
      .env_remove("TETHER_READY_FD");
  for (const auto& [k, v] : spec_.env) cmd.env(k, v);
  if (!spec_.cwd.empty()) cmd.cwd(spec_.cwd);
  std::optional<std::pair<Fd, Fd>> ready;
  if (spec_.wait_ready) {
    auto r = make_pipe(true);
    if (!r) return std::unexpected(r.error());
    ready = std::move(*r);
    cmd.pass_fd(ready->second.get(), spec_.ready_fd);
    cmd.env("TETHER_READY_FD", std::to_string(spec_.ready_fd));
  }
  auto p = cmd.spawn();
  if (!p) return std::unexpected(p.error());
  proc_ = std::move(*p);
  // Its identity, for whoever must signal what is left of it after we are
  // gone (tether list --prune): a pid alone may be recycled.
  auto st = sd::read_proc_stat(proc_->pid());
  pid_start_ = st ? st->start_ticks : 0;
  if (spec_.tty) {
    // One descriptor, the terminal's master end, both ways.
    out_ = proc_->pty().release();
    auto copy = out_.duplicate();
    if (copy) in_ = std::move(*copy);
  } else {
    in_ = std::move(in->second);
    out_ = std::move(out->first);
  }
  (void)in_.set_nonblocking(true);  // a worker that does not read never blocks us
  (void)out_.set_nonblocking(true);
  out_lines_.drop_partial();
  if (ready) ready_ = std::move(ready->first);
  started_ = steady::now();
  started_ms_ = sd::now_ms();
  got_term_ = paused_ = false;
  event(fmt::format("started {} (pid {})", cmd.describe(), proc_->pid()));
  return {};
}

void Supervisor::worker_ended(const ExitStatus& status) {
  milliseconds ran = std::chrono::duration_cast<milliseconds>(steady::now() - started_);
  pid_t pid = proc_->pid();
  proc_.reset();
  pid_start_ = 0;
  // Nothing of the worker survives it: what is left of its group goes, and
  // so do descendants that left the group (see kill_strays). The group is
  // the worker's: its leader was our child until just now, and a pid is not
  // reused while a group of that id has members.
  if (pid > 1) (void)::kill(-pid, SIGKILL);
  kill_strays();
  read_output(true);
  out_.reset();
  in_.reset();
  ready_.reset();
  started_ms_ = 0;
  last_exit_ = status;
  last_success_ = status.success();
  last_healthy_ = ran >= spec_.healthy_after;
  event(fmt::format("worker pid {} {} after {} ms", pid, status.describe(), ran.count()));
  // Why it did not start, should tether open still wait: its end, or that
  // it was stopped over its memory limit.
  failure_ = over_memory_.empty()
                 ? fmt::format("{} {} before it was {}", spec_.command.front(), status.describe(),
                               spec_.wait_ready ? "ready" : "running")
                 : std::exchange(over_memory_, {});
  dispatch(Event::exited);
  memory_stop_ = false;  // that end was the one it was about
}

// ---------------------------------------------------------------- the table at work

sd::Facts Supervisor::facts() const {
  sd::Facts f;
  f.policy = spec_.restart;
  f.wait_ready = spec_.wait_ready;
  f.awaiting_report = report_fd_ >= 0;
  f.restarts_left = spec_.max_restarts < 0 || restarts_ < spec_.max_restarts;
  f.exit_success = last_success_;
  f.ran_healthy = last_healthy_;
  f.memory_stop = memory_stop_;
  return f;
}

void Supervisor::dispatch(Event e) {
  auto t = sd::transition(state_, want_, e, facts());
  if (t.state != state_) {
    ::clock_gettime(CLOCK_REALTIME, &since_ts_);
    since_ms_ = sd::now_ms();
  }
  state_ = t.state;
  want_ = t.want;
  bool spawned = perform(t.actions);
  if (!spawned) return dispatch(Event::spawn_failed);
  // The record first, then the report: a client that hears "ok" reads a
  // status.json that already says so.
  write_status();
  conclude(t.actions);
}

// Carries out the actions that change things, in their order; false when a
// spawn failed (the actions after it are not done: the table hears
// spawn_failed instead). The reports and the finish are conclude()'s.
bool Supervisor::perform(std::uint16_t a) {
  if (a & sd::kDisarmTimer) disarm_timer();
  if ((a & sd::kTerm) && proc_) {
    got_term_ = true;
    // The whole group: the worker leads its own (new session), so its
    // children go too. SIGCONT lets a stopped worker act on the SIGTERM.
    (void)signal_process_group(proc_->pid(), SIGTERM);
    (void)signal_process_group(proc_->pid(), SIGCONT);
    arm_timer(spec_.grace);
  }
  if ((a & sd::kKill) && proc_) {
    event(fmt::format("worker pid {} still running {} ms after SIGTERM: SIGKILL", proc_->pid(),
                      spec_.grace.count()));
    (void)signal_process_group(proc_->pid(), SIGKILL);
    (void)proc_->signal(SIGKILL);
  }
  if (a & sd::kResetBackoff) backoff_ = milliseconds(0);
  if (a & sd::kCountRestart) ++restarts_;
  if (a & sd::kSpawn) {
    if (auto r = start_worker(); !r) {
      event("cannot start: " + r.error().message());
      failure_ = r.error().message();
      return false;
    }
  }
  if (a & sd::kArmBackoff) {
    backoff_ =
        backoff_.count() == 0 ? spec_.backoff_min : std::min(backoff_ * 2, spec_.backoff_max);
    event(fmt::format("restarting in {} ms (crash loop backoff)", backoff_.count()));
    arm_timer(backoff_);
  }
  return true;
}

// The actions that tell: after the record is written (dispatch).
void Supervisor::conclude(std::uint16_t a) {
  if ((a & sd::kReportOk) && proc_) {
    report({launch::Report::Kind::ok, spec_.id, proc_->pid(), ::getpid(), {}});
  }
  if (a & sd::kReportFailed)
    report_error(failure_.empty() ? "stopped before it started" : failure_);
  if (a & sd::kGiveUp) {
    event(fmt::format("not restarting: {} restarts already (--max-restarts)", restarts_));
  }
  if (a & sd::kFinish) finish();
}

void Supervisor::arm_timer(milliseconds in) {
  itimerspec its{};
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::max(in, milliseconds(1)));
  its.it_value.tv_sec = static_cast<time_t>(ns.count() / 1000000000);
  its.it_value.tv_nsec = static_cast<long>(ns.count() % 1000000000);
  ::timerfd_settime(timer_.get(), 0, &its, nullptr);
}

void Supervisor::disarm_timer() {
  itimerspec its{};
  ::timerfd_settime(timer_.get(), 0, &its, nullptr);
}

// The worker and every process it left with us (our descendants: we are
// its parent and the subreaper of what it leaves behind) against the
// memory limit; over it, the table decides (restart, or stop).
void Supervisor::check_memory() {
  if (!proc_ || (state_ != WorkerState::starting && state_ != WorkerState::up)) return;
  auto m = sd::descendants_memory(::getpid());
  if (m.rss_bytes <= spec_.memory_limit) return;
  auto mib = [](std::uint64_t b) { return static_cast<double>(b) / 1048576.0; };
  std::string what = fmt::format(
      "over its memory limit: {:.1f} MiB resident in {} process{} > limit {:.1f} MiB",
      mib(m.rss_bytes), m.processes, m.processes == 1 ? "" : "es", mib(spec_.memory_limit));
  // Whether it runs again is the table's: the stop, then its end as a failure.
  auto f = facts();
  auto stop = sd::transition(state_, want_, Event::over_memory, f);
  f.memory_stop = true;
  auto after = sd::transition(stop.state, stop.want, Event::exited, f).state;
  bool again =
      after == WorkerState::starting || after == WorkerState::up || after == WorkerState::backoff;
  event(fmt::format("worker pid {} {}: {}", proc_->pid(), what, again ? "restarting" : "stopping"));
  over_memory_ = spec_.command.front() + " went " + what + " before it was " +
                 (spec_.wait_ready ? "ready" : "running");
  memory_stop_ = true;
  dispatch(Event::over_memory);
}

// With no worker running, every child we still have is a stray: a
// descendant of a worker that left its process group (setsid, a double
// fork) and was re-parented to us, the subreaper. They go too: nothing of a
// worker survives it. (/proc/<pid>/task/<tid>/children lists them; we have
// one thread.)
void Supervisor::kill_strays() {
  if (proc_) return;
  std::FILE* f = std::fopen(fmt::format("/proc/self/task/{}/children", ::getpid()).c_str(), "re");
  if (!f) return;
  int pid = 0;
  int killed = 0;
  while (std::fscanf(f, "%d", &pid) == 1) {
    // Our child, alive or a zombie not yet reaped: its pid cannot be reused.
    if (pid > 1 && ::kill(pid, SIGKILL) == 0) ++killed;
  }
  std::fclose(f);
  if (killed > 0) event(fmt::format("killed {} leftover process(es) of the worker", killed));
}

void Supervisor::reap_orphans() {
  // Reap every ended child that is not the worker (the worker is reaped
  // through its pidfd). WNOWAIT first, so the worker is never taken here.
  for (;;) {
    siginfo_t si{};
    if (::waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == 0) return;
    if (proc_ && si.si_pid == proc_->pid()) {
      auto st = proc_->wait();
      if (st) worker_ended(*st);
      if (done_) return;
      continue;
    }
    siginfo_t gone{};
    ::waitid(P_PID, static_cast<id_t>(si.si_pid), &gone, WEXITED | WNOHANG);
    kill_strays();  // a stray's own children may just have come to us
  }
}

// ---------------------------------------------------------------- commands

void Supervisor::read_control(int fd, LineReader* lines) {
  char buf[4096];  // small: a touched stack page stays resident, times every supervisor
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;  // EAGAIN: drained (our keep-alive writer means no EOF)
    if (!lines) {       // runit/daemontools: every byte is a command
      for (ssize_t i = 0; i < n && !done_; ++i) {
        char c = buf[i];
        if (c == '\n') continue;
        auto cmd = sd::parse_control_letter(c);
        cmd.word = std::string_view(&buf[i], 1);
        if (cmd.kind == sd::ControlCommand::Kind::bad) cmd.text = cmd.word;
        act(cmd);
      }
      continue;
    }
    lines->feed(std::string_view(buf, static_cast<std::size_t>(n)));
    while (auto line = lines->next()) {
      if (done_) return;
      if (line->cut) {
        bad_command(fmt::format("line longer than {} bytes", sd::kMaxCommand - 1), line->text);
      } else if (!line->text.empty()) {
        command(line->text);
      }
    }
  }
  // Drained. Every client writes a command whole in one write shorter than
  // PIPE_BUF, which the kernel never splits; so bytes without their newline
  // once the FIFO is empty are not the start of a command still coming, but
  // the rest of a client that wrote no newline (`printf exit`) or died in
  // mid-write. Dropped: they must not be glued to the next client's command.
  if (lines && lines->partial_size() > 0) {
    bad_command("incomplete command (no newline) discarded", lines->take_partial());
  }
  if (bad_suppressed_ > 0) {
    std::int64_t second = sd::now_ms() / 1000;
    if (second != summary_second_) {
      summary_second_ = second;
      event(fmt::format("{} more bad commands ignored", std::exchange(bad_suppressed_, 0)));
    }
  }
}

void Supervisor::command(std::string_view line) {
  act(sd::parse_control_line(line));
}

void Supervisor::act(const sd::ControlCommand& c) {
  using Kind = sd::ControlCommand::Kind;
  switch (c.kind) {
    case Kind::bad:
      return bad_command(c.why, c.text);
    case Kind::send:
      event(fmt::format("command: send ({} bytes)", c.text.size()));
      return deliver(c.text);
    case Kind::signal:
      ++commands_;  // send_signal writes the status
      event(c.word == "signal" ? "command: signal " + signal_name(c.signal)
                               : fmt::format("command: {} ({})", c.word, signal_name(c.signal)));
      return send_signal(c.signal);
    case Kind::event:
      ++commands_;  // dispatch writes the status, even when nothing changes
      event(fmt::format("command: {}", c.word));
      // What a command asks for is done as asked: a stop, exit, restart or
      // once given while the memory limit's stop is under way is not a
      // failure's. (`up`, wanted already, changes nothing: the policy and
      // the backoff still decide after a memory stop.)
      if (c.event != Event::up) memory_stop_ = false;
      return dispatch(c.event);
  }
}

void Supervisor::send_signal(int sig) {
  if (!proc_) return write_status();  // the command counted
  if (sig == SIGSTOP) paused_ = true;
  if (sig == SIGCONT) paused_ = false;
  if (sig == SIGTERM) got_term_ = true;
  (void)signal_process_group(proc_->pid(), sig);
  // As runsv does: after TERM, CONT, so a stopped worker can act on it.
  if (sig == SIGTERM) (void)signal_process_group(proc_->pid(), SIGCONT);
  write_status();
}

void Supervisor::bad_command(std::string_view why, std::string_view what) {
  std::int64_t second = sd::now_ms() / 1000;
  if (second != bad_second_) {
    if (bad_suppressed_ > 0 && second != summary_second_) {
      summary_second_ = second;
      event(fmt::format("{} more bad commands ignored", std::exchange(bad_suppressed_, 0)));
    }
    bad_second_ = second;
    bad_in_second_ = 0;
  }
  if (++bad_in_second_ > 10) {
    ++bad_suppressed_;
    return;
  }
  event(fmt::format("bad command ignored: {}: \"{}\"", why, sanitize(what)));
}

void Supervisor::deliver(std::string_view message) {
  if (!in_) return event("message dropped: the worker is not running");
  std::string text(message);
  text += '\n';
  // Shorter than PIPE_BUF: written whole or not at all.
  auto n = write_some(in_.get(), std::as_bytes(std::span(text)), "the worker's input");
  if (!n) {
    event("message dropped: " +
          std::string(would_block(n.error()) ? "the worker's input is full" : n.error().message()));
  }
}

// ---------------------------------------------------------------- logging

void Supervisor::read_output(bool final_read) {
  if (!out_) return;
  char buf[4096];  // small: a touched stack page stays resident, times every supervisor
  for (;;) {
    ssize_t n = ::read(out_.get(), buf, sizeof buf);
    // End of file: the worker (and all its children) closed it. On a
    // terminal's master end the same news is EIO (pty(7)).
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      out_.reset();
      break;
    }
    if (n < 0) break;
    out_lines_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
    while (auto line = out_lines_.next()) log_line(line->text);  // a very long line: in pieces
  }
  if (final_read && out_lines_.partial_size() > 0) log_line(out_lines_.take_partial());
}

void Supervisor::event(std::string_view text) {
  log_line(fmt::format("[tether] {}", text));
}

void Supervisor::log_line(std::string_view text) {
  if (!log_) return;
  if (spec_.tty && text.ends_with('\r')) text.remove_suffix(1);  // the terminal's "\r\n"
  std::string line = timestamp() + " " + std::string(text) + "\n";
  if (log_size_ + line.size() > spec_.log_max_bytes) rotate_log();
  if (auto n = write_some(log_.get(), std::as_bytes(std::span(line)), "log"); n) log_size_ += *n;
}

void Supervisor::rotate_log() {
  // log.N-1 -> log.N, …, log -> log.1; the oldest falls off.
  for (int i = spec_.log_keep; i >= 1; --i) {
    std::string from =
        i == 1 ? std::string(sd::kLogFile) : fmt::format("{}.{}", sd::kLogFile, i - 1);
    std::string to = fmt::format("{}.{}", sd::kLogFile, i);
    ::renameat(dirfd_.get(), from.c_str(), dirfd_.get(), to.c_str());
  }
  int flags =
      O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC | (spec_.log_keep == 0 ? O_TRUNC : 0);
  log_.reset(::openat(dirfd_.get(), sd::kLogFile, flags, 0600));
  if (log_) (void)::fchmod(log_.get(), 0600);
  log_size_ = 0;
}

// ---------------------------------------------------------------- status

void Supervisor::write_status() {
  if (!dirfd_ || done_ || dir_removed_) return;
  // supervise/status first: status.json is what tether's clients wait on,
  // so when it shows a change, sv and svstat already see it too.
  // supervise/status is in runit's 20-byte layout (daemontools reads the
  // first 18): TAI64N of the last change, pid (LE), paused, want, got TERM, run.
  unsigned char s[20] = {};
  std::uint64_t tai = 4611686018427387914ULL + static_cast<std::uint64_t>(since_ts_.tv_sec);
  for (int i = 7; i >= 0; --i, tai >>= 8) s[i] = static_cast<unsigned char>(tai & 0xff);
  auto nsec = static_cast<std::uint32_t>(since_ts_.tv_nsec);
  for (int i = 11; i >= 8; --i, nsec >>= 8) s[i] = static_cast<unsigned char>(nsec & 0xff);
  auto pid = static_cast<std::uint32_t>(proc_ ? proc_->pid() : 0);
  for (int i = 12; i < 16; ++i, pid >>= 8) s[i] = static_cast<unsigned char>(pid & 0xff);
  s[16] = paused_ ? 1 : 0;
  s[17] = want_ == Want::up || want_ == Want::once ? 'u' : 'd';
  s[18] = got_term_ && proc_ ? 1 : 0;
  s[19] = proc_ ? 1 : 0;
  (void)svstatus_.replace(std::string_view(reinterpret_cast<const char*>(s), sizeof s));
  WorkerInfo w;
  w.id = spec_.id;
  w.name = spec_.name;
  w.state = state_;
  w.want = want_;
  w.pid = proc_ ? proc_->pid() : 0;
  w.pid_start = proc_ ? pid_start_ : 0;
  w.supervisor_pid = ::getpid();
  w.since_ms = since_ms_;
  w.started_ms = started_ms_;
  w.restarts = restarts_;
  w.commands = commands_;
  w.restart_policy = spec_.restart;
  w.command = spec_.command;
  w.set = spec_.set;
  if (last_exit_) {
    w.last_exit_code = last_exit_->code();
    w.last_exit_signal = last_exit_->signal();
  }
  if (auto r = status_.replace(sd::encode_status(w)); !r) {
    event("cannot write status: " + r.error().message());
  }
  // (runsv also keeps supervise/stat and supervise/pid; sv, svok, svstat and
  // svc read none of them, and each would be one more file replaced per change.)
}

void Supervisor::report(const launch::Report& r) {
  if (report_fd_ < 0) return;
  std::string text = launch::encode_report(r);
  (void)write_some(report_fd_, std::as_bytes(std::span(text)), "report");
  ::close(report_fd_);
  report_fd_ = -1;
}

void Supervisor::report_error(std::string text) {
  report({launch::Report::Kind::error, spec_.id, 0, 0, std::move(text)});
}

// After a change in our directory or the state directory (dnotify): true
// when the lock or the control FIFO is no longer the one we made (removed,
// or replaced by a file or a symbolic link), or the directory is no longer
// at its name (moved away, or the name taken by another). We only rename
// status and log files, and remove nothing before finish().
bool Supervisor::directory_lost() {
  auto same = [](const struct stat& a, const struct stat& b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
  };
  struct stat st {};
  if (::fstatat(dirfd_.get(), sd::kLockFile, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
      !same(st, lock_st_)) {
    return true;
  }
  if (::fstatat(dirfd_.get(), sd::kControlFifo, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
      !same(st, control_st_)) {
    return true;
  }
  if (::fstatat(state_fd_, spec_.id.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !same(st, dir_st_)) {
    return true;
  }
  return false;
}

void Supervisor::finish() {
  event("supervisor exiting");
  done_ = true;
  if (name_claimed_) sd::release_name(state_fd_, spec_.name, spec_.id);
  // Remove the directory while still holding the lock: a client sees the
  // worker either alive or gone, never a stale directory.
  if (dir_removed_) return;
  // Renamed away first, in one step, then removed: a client sees the
  // directory whole (lock held) or not at all, never half-removed.
  std::string gone = "." + spec_.id + ".gone";
  std::string name = spec_.id;
  if (::renameat(state_fd_, name.c_str(), state_fd_, gone.c_str()) == 0) name = gone;
  dir_removed_ = sd::remove_tree(state_fd_, name).has_value();
}

// ---------------------------------------------------------------- the loop

int Supervisor::run(int report_fd) {
  report_fd_ = report_fd;
  ::clock_gettime(CLOCK_REALTIME, &since_ts_);
  since_ms_ = sd::now_ms();
  if (auto r = setup(); !r) {
    report_error(r.error().message());
    return 1;
  }
  // The first start is the table's too: from down, asked up, with tether
  // open waiting for the answer. Started down, there is nothing to start:
  // the record says so, then tether open hears "ok" with no worker.
  state_ = WorkerState::down;
  want_ = Want::down;
  if (spec_.start_down) {
    event("started down: the worker starts at `tether start`");
    write_status();
    report({launch::Report::Kind::ok, spec_.id, 0, ::getpid(), {}});
  } else {
    dispatch(Event::up);
  }

  while (!done_) {
    enum { kControl, kSvControl, kSignal, kTimer, kPid, kOut, kReady, kCheck, kMemory, kCount };
    pollfd fds[kCount] = {
        {control_.fd(), POLLIN, 0},
        {svcontrol_.fd(), POLLIN, 0},
        {sigfd_.get(), POLLIN, 0},
        {timer_.get(), POLLIN, 0},
        {proc_ ? proc_->pidfd() : -1, POLLIN, 0},
        {out_.get(), POLLIN, 0},
        {ready_.get(), POLLIN, 0},
        {check_.get(), POLLIN, 0},
        {memory_.get(), POLLIN, 0},
    };
    // Before sleeping, give back the heap pages this round's temporaries
    // touched: resident memory times every supervisor is the figure that
    // counts (a few microseconds, and only after something happened).
    ::malloc_trim(0);
    int n = ::poll(fds, kCount, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      event(fmt::format("poll failed: {}", std::strerror(errno)));
      return 1;
    }
    if (fds[kOut].revents) read_output(false);
    if (fds[kReady].revents && ready_) {
      char buf[256];
      ssize_t r = ::read(ready_.get(), buf, sizeof buf);
      if (r > 0 && std::memchr(buf, '\n', static_cast<std::size_t>(r))) {
        ready_.reset();
        event("worker is ready");
        dispatch(Event::ready);
      } else if (r == 0) {
        ready_.reset();  // closed without a line: not ready (yet); wait for its exit
      }
    }
    if (fds[kPid].revents && proc_) {
      auto st = proc_->wait();
      if (st) {
        worker_ended(*st);
      } else {
        event("wait failed: " + st.error().message());
        proc_.reset();
      }
    }
    if (done_) break;
    bool dir_changed = false;
    if (fds[kCheck].revents) {
      std::uint64_t ticks = 0;
      dir_changed = ::read(check_.get(), &ticks, sizeof ticks) == sizeof ticks;
    }
    if (fds[kSignal].revents || dir_changed) {
      signalfd_siginfo si{};
      bool child = false;
      while (::read(sigfd_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        int sig = static_cast<int>(si.ssi_signo);
        if (sig == SIGCHLD) {
          child = true;
        } else if (sig == dir_signal()) {
          dir_changed = true;
        } else if (sig == SIGTERM || sig == SIGINT) {
          event("got " + signal_name(sig) + ": stopping the worker and exiting");
          dispatch(Event::exit);
        } else {
          event("got " + signal_name(sig) + ": ignored");
        }
      }
      if (dir_changed && !done_ && directory_lost()) {
        event("the worker's directory was removed, moved or tampered with: exiting");
        dir_removed_ = true;  // by someone else: nothing of ours to remove
        log_.reset();
        dispatch(Event::exit);
      }
      if (child && !done_) reap_orphans();
    }
    if (done_) break;
    if (fds[kTimer].revents) {
      std::uint64_t ticks = 0;
      if (::read(timer_.get(), &ticks, sizeof ticks) == sizeof ticks) dispatch(Event::timer);
    }
    if (fds[kMemory].revents && !done_) {
      std::uint64_t ticks = 0;
      if (::read(memory_.get(), &ticks, sizeof ticks) == sizeof ticks) check_memory();
    }
    if (fds[kControl].revents && !done_) read_control(control_.fd(), &control_lines_);
    if (fds[kSvControl].revents && !done_) read_control(svcontrol_.fd(), nullptr);
  }
  return 0;
}

}  // namespace

int run_supervisor(const StateDir& dir, const SupervisorSpec& spec, int report_fd) {
  if (spec.command.empty()) {
    std::string line = launch::encode_report(
        {launch::Report::Kind::error, spec.id, 0, 0, "no command to supervise"});
    (void)write_some(report_fd, std::as_bytes(std::span(line)), "report");
    return 2;
  }
  Supervisor s(dir, spec);
  return s.run(report_fd);
}

}  // namespace tether
