// One worker's supervisor: a single poll loop over the control FIFOs, the
// worker's pidfd, its output pipe, a signalfd and a timerfd. It never
// busy-waits: with nothing to do it sleeps in poll(2) with no timeout.
//
// States: starting (spawned, waiting for its readiness line), up, stopping
// (SIGTERM sent, SIGKILL armed), down (wanted down), backoff (waiting to
// restart a crash), exited (ended and not to be restarted by policy).
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "internal.hpp"
#include "tether/process.hpp"

namespace tether {

namespace sd = supervise_detail;
namespace fs = std::filesystem;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

namespace {

// The signal a runit/daemontools control letter sends, or 0.
int letter_signal(char c) {
  switch (c) {
    case 't':
      return SIGTERM;
    case 'k':
      return SIGKILL;
    case 'p':
      return SIGSTOP;
    case 'c':
      return SIGCONT;
    case 'h':
      return SIGHUP;
    case 'a':
      return SIGALRM;
    case 'i':
      return SIGINT;
    case 'q':
      return SIGQUIT;
    case '1':
      return SIGUSR1;
    case '2':
      return SIGUSR2;
    default:
      return 0;
  }
}

bool is_letter_command(char c) {
  return c == 'u' || c == 'd' || c == 'o' || c == 'x' || letter_signal(c) != 0;
}

// "TERM", "SIGTERM" or "15".
std::optional<int> parse_signal(std::string_view s) {
  int n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec == std::errc() && end == s.data() + s.size()) {
    return n > 0 && n < NSIG ? std::optional<int>(n) : std::nullopt;
  }
  if (s.starts_with("SIG")) s.remove_prefix(3);
  for (int sig = 1; sig < NSIG; ++sig) {
    std::string name = signal_name(sig);
    if (name.starts_with("SIG") && std::string_view(name).substr(3) == s) return sig;
  }
  return std::nullopt;
}

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

class Supervisor {
 public:
  Supervisor(const StateDir& dir, const SupervisorSpec& spec)
      : spec_(spec), final_(dir.worker_path(spec.id)) {
    tmp_ = dir.path() / ("." + spec.id + ".new");
  }
  ~Supervisor() {
    if (!dir_removed_ && created_) {
      std::error_code ec;
      fs::remove_all(renamed_ ? final_ : tmp_, ec);
    }
  }

  int run(int report_fd);

 private:
  Result<void> setup();
  Result<void> open_fifo(const char* path, Fd& reader, Fd* keepalive);
  Result<void> start_worker();
  void worker_ended(const ExitStatus& status);
  void stop_worker();
  void decide_after_exit(const ExitStatus& status, milliseconds ran);
  void read_control(int fd, std::string& line, bool& discarding, bool letters_only);
  void command(std::string_view line);
  void letter(char c);
  void bad_command(std::string_view why, std::string_view what);
  void deliver(std::string_view message);
  void read_output(bool final_read);
  void reap_orphans();
  void kill_strays();
  void arm_timer(milliseconds in);
  void disarm_timer();
  void on_timer();
  void set_state(std::string state);
  void write_status();
  void event(std::string_view text);
  void log_line(std::string_view text);
  void rotate_log();
  void report(std::string_view line);
  void finish();
  bool directory_lost();

  SupervisorSpec spec_;
  fs::path final_, tmp_;
  bool created_ = false, renamed_ = false, dir_removed_ = false;
  Fd dirfd_, lock_, control_, control_keep_, svcontrol_, svcontrol_keep_, ok_;
  Fd sigfd_, timer_, log_;
  std::uint64_t log_size_ = 0;
  int report_fd_ = -1;

  std::optional<Process> proc_;
  Fd in_, out_, ready_;  // the worker's stdin (ours to write), output, readiness
  std::string out_partial_;
  steady::time_point started_{};
  std::int64_t started_ms_ = 0;

  std::string state_ = "starting", want_ = "up";
  bool once_ = false, paused_ = false, got_term_ = false, stopping_ = false;
  bool restart_now_ = false;  // `restart`: start again at once, whatever the policy
  bool done_ = false;
  std::int64_t since_ms_ = 0;
  timespec since_ts_{};
  int restarts_ = 0;
  milliseconds backoff_{0};
  std::optional<ExitStatus> last_exit_;
  enum class TimerFor { none, restart, kill } timer_for_ = TimerFor::none;

  std::string control_line_, svcontrol_line_;
  bool control_discard_ = false, svcontrol_discard_ = false;
  // Bad-command logging is rate-limited: a flood must not flood the log.
  std::int64_t bad_second_ = 0;
  int bad_in_second_ = 0, bad_suppressed_ = 0;
};

// ---------------------------------------------------------------- setup

Result<void> Supervisor::open_fifo(const char* path, Fd& reader, Fd* keepalive) {
  if (::mkfifoat(dirfd_.get(), path, 0600) != 0) {
    return fail(errno, fmt::format("create FIFO {}", (tmp_ / path).string()));
  }
  reader.reset(::openat(dirfd_.get(), path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  if (!reader) return fail(errno, fmt::format("open FIFO {}", (tmp_ / path).string()));
  // Our own writer keeps the FIFO from ever reporting end of file when a
  // client closes it, so poll never spins on POLLHUP.
  if (keepalive) {
    keepalive->reset(::openat(dirfd_.get(), path, O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
    if (!*keepalive) return fail(errno, fmt::format("open FIFO {}", (tmp_ / path).string()));
  }
  return {};
}

Result<void> Supervisor::setup() {
  // Built under a hidden name and renamed when complete, so `tether list`
  // never sees (and `--prune` never removes) a half-made directory.
  if (::mkdir(tmp_.c_str(), 0700) != 0) return fail(errno, "create " + tmp_.string());
  created_ = true;
  if (::access(final_.c_str(), F_OK) == 0) return fail(EEXIST, "create " + final_.string());
  dirfd_.reset(::open(tmp_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dirfd_) return fail(errno, "open " + tmp_.string());
  lock_.reset(::openat(dirfd_.get(), sd::kLockFile, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!lock_) return fail(errno, "create the lock of " + tmp_.string());
  if (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) return fail(errno, "lock " + tmp_.string());
  if (auto r = open_fifo(sd::kControlFifo, control_, &control_keep_); !r) return r;
  // The runit/daemontools view: supervise/control takes single letters,
  // supervise/ok opens for writing only while we are alive (svok, sv).
  if (::mkdirat(dirfd_.get(), "supervise", 0700) != 0) return fail(errno, "create supervise/");
  if (auto r = open_fifo("supervise/control", svcontrol_, &svcontrol_keep_); !r) return r;
  if (auto r = open_fifo("supervise/ok", ok_, nullptr); !r) return r;  // never read
  log_.reset(::openat(dirfd_.get(), sd::kLogFile,
                      O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!log_) return fail(errno, "create the log of " + tmp_.string());

  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGCHLD, dir_signal()}) sigaddset(&set, s);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  sigfd_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd_) return fail(errno, "signalfd");
  timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer_) return fail(errno, "timerfd_create");
  // Orphans of the worker are re-parented to us, so we reap them.
  if (auto r = set_child_subreaper(true); !r) return r;

  if (::rename(tmp_.c_str(), final_.c_str()) != 0) return fail(errno, "create " + final_.string());
  renamed_ = true;
  // A supervisor whose lock or FIFO is removed (rm -r of its directory) can
  // no longer be reached by any client: it then stops its worker and exits.
  // dnotify, not inotify: an inotify instance per supervisor would run into
  // fs.inotify.max_user_instances (128 per user by default) at the 128th
  // worker. Its signal arrives through the signalfd like the others.
  if (::fcntl(dirfd_.get(), F_SETSIG, dir_signal()) != 0 ||
      ::fcntl(dirfd_.get(), F_NOTIFY, DN_DELETE | DN_RENAME | DN_MULTISHOT) != 0) {
    return fail(errno, "watch " + final_.string() + " (F_NOTIFY)");
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
  cmd.new_session()
      .die_with_parent(SIGKILL)  // it stops with its supervisor: never runs twice
      .stdin_from(Stdio::fd(in->first.get()))
      .stdout_to(Stdio::fd(out->second.get()))
      .stderr_to(Stdio::merge_into_stdout())
      .env("TETHER_WORKER_ID", spec_.id)
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
  in_ = std::move(in->second);
  (void)in_.set_nonblocking(true);  // a worker that does not read never blocks us
  out_ = std::move(out->first);
  (void)out_.set_nonblocking(true);
  out_partial_.clear();
  if (ready) ready_ = std::move(ready->first);
  started_ = steady::now();
  started_ms_ = sd::now_ms();
  got_term_ = paused_ = stopping_ = false;
  event(fmt::format("started {} (pid {})", cmd.describe(), proc_->pid()));
  set_state(spec_.wait_ready ? "starting" : "up");
  return {};
}

void Supervisor::stop_worker() {
  if (!proc_ || stopping_) return;
  stopping_ = true;
  got_term_ = true;
  // The whole group: the worker leads its own (new session), so its
  // children go too. SIGCONT lets a stopped worker act on the SIGTERM.
  (void)signal_process_group(proc_->pid(), SIGTERM);
  (void)signal_process_group(proc_->pid(), SIGCONT);
  arm_timer(spec_.grace);
  timer_for_ = TimerFor::kill;
  set_state("stopping");
}

void Supervisor::worker_ended(const ExitStatus& status) {
  milliseconds ran = std::chrono::duration_cast<milliseconds>(steady::now() - started_);
  pid_t pid = proc_->pid();
  proc_.reset();
  // Nothing of the worker survives it: what is left of its group goes, and
  // so do descendants that left the group (see kill_strays).
  (void)::kill(-pid, SIGKILL);
  kill_strays();
  read_output(true);
  out_.reset();
  in_.reset();
  ready_.reset();
  started_ms_ = 0;
  last_exit_ = status;
  if (timer_for_ == TimerFor::kill) disarm_timer();
  event(fmt::format("worker pid {} {} after {} ms", pid, status.describe(), ran.count()));
  if (report_fd_ >= 0) {
    report(fmt::format("error {} {} before it was {}", spec_.command.front(), status.describe(),
                       spec_.wait_ready ? "ready" : "running"));
    want_ = "exit";
  }
  decide_after_exit(status, ran);
}

void Supervisor::decide_after_exit(const ExitStatus& status, milliseconds ran) {
  stopping_ = false;
  if (want_ == "exit") return finish();
  if (want_ == "down" || once_) {
    once_ = false;
    want_ = "down";
    return set_state("down");
  }
  bool asked = std::exchange(restart_now_, false);
  bool restart = asked || spec_.restart == RestartPolicy::always ||
                 (spec_.restart == RestartPolicy::on_failure && !status.success());
  if (!restart) return set_state("exited");
  if (!asked && spec_.max_restarts >= 0 && restarts_ >= spec_.max_restarts) {
    event(fmt::format("not restarting: {} restarts already (--max-restarts)", restarts_));
    return set_state("exited");
  }
  if (asked || ran >= spec_.healthy_after) {
    backoff_ = milliseconds(0);  // it ran healthily: again, at once
  } else {
    backoff_ =
        backoff_.count() == 0 ? spec_.backoff_min : std::min(backoff_ * 2, spec_.backoff_max);
  }
  if (backoff_.count() == 0) {
    ++restarts_;
    if (auto r = start_worker(); !r) {
      event("cannot restart: " + r.error().message());
      backoff_ = spec_.backoff_min;
    } else {
      return;
    }
  }
  event(fmt::format("restarting in {} ms (crash loop backoff)", backoff_.count()));
  arm_timer(backoff_);
  timer_for_ = TimerFor::restart;
  set_state("backoff");
}

void Supervisor::on_timer() {
  std::uint64_t ticks = 0;
  (void)::read(timer_.get(), &ticks, sizeof ticks);
  auto why = std::exchange(timer_for_, TimerFor::none);
  if (why == TimerFor::kill && proc_) {
    event(fmt::format("worker pid {} still running {} ms after SIGTERM: SIGKILL", proc_->pid(),
                      spec_.grace.count()));
    (void)signal_process_group(proc_->pid(), SIGKILL);
    (void)proc_->signal(SIGKILL);
  } else if (why == TimerFor::restart && !proc_ && want_ == "up") {
    ++restarts_;
    if (auto r = start_worker(); !r) {
      event("cannot restart: " + r.error().message());
      backoff_ = std::min(std::max(backoff_ * 2, spec_.backoff_min), spec_.backoff_max);
      arm_timer(backoff_);
      timer_for_ = TimerFor::restart;
    }
  }
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
  timer_for_ = TimerFor::none;
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
    if (::kill(pid, SIGKILL) == 0) ++killed;
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
      continue;
    }
    siginfo_t gone{};
    ::waitid(P_PID, static_cast<id_t>(si.si_pid), &gone, WEXITED | WNOHANG);
    kill_strays();  // a stray's own children may just have come to us
  }
}

// ---------------------------------------------------------------- commands

void Supervisor::read_control(int fd, std::string& line, bool& discarding, bool letters_only) {
  char buf[4096];  // small: a touched stack page stays resident, times every supervisor
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {  // EAGAIN: drained (our keepalive writer means no EOF)
      if (bad_suppressed_ > 0) {
        event(fmt::format("{} more bad commands ignored", std::exchange(bad_suppressed_, 0)));
      }
      return;
    }
    for (ssize_t i = 0; i < n; ++i) {
      char c = buf[i];
      if (letters_only) {  // runit/daemontools: every byte is a command
        if (is_letter_command(c)) {
          letter(c);
        } else if (c != '\n') {
          bad_command("unknown control letter", std::string_view(&c, 1));
        }
        continue;
      }
      if (discarding) {
        if (c == '\n') discarding = false;
        continue;
      }
      if (c == '\n') {
        if (!line.empty()) command(line);
        line.clear();
        continue;
      }
      if (line.size() + 1 >= sd::kMaxCommand) {
        bad_command(fmt::format("line longer than {} bytes", sd::kMaxCommand - 1), line);
        line.clear();
        discarding = true;
        continue;
      }
      line += c;
    }
  }
}

void Supervisor::command(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::string_view verb = line.substr(0, line.find(' '));
  std::string_view rest =
      line.size() > verb.size() ? line.substr(verb.size() + 1) : std::string_view();
  if (line.size() == 1 && is_letter_command(line[0])) return letter(line[0]);
  if (verb == "send") {
    event(fmt::format("command: send ({} bytes)", rest.size()));
    return deliver(rest);
  }
  if (verb == "signal") {
    auto sig = parse_signal(rest);
    if (!sig) return bad_command("unknown signal", rest);
    event("command: signal " + signal_name(*sig));
    if (proc_) (void)signal_process_group(proc_->pid(), *sig);
    return;
  }
  if (!rest.empty()) return bad_command("unexpected argument", line);
  if (verb == "exit") return letter('x');
  if (verb == "stop" || verb == "down") return letter('d');
  if (verb == "start" || verb == "up") return letter('u');
  if (verb == "once") return letter('o');
  if (verb == "restart") {
    event("command: restart");
    if (!proc_) return letter('u');
    want_ = "up";
    once_ = false;
    restart_now_ = true;
    return stop_worker();  // decide_after_exit starts it again at once
  }
  bad_command("unknown command", line);
}

void Supervisor::letter(char c) {
  if (int sig = letter_signal(c)) {
    event(fmt::format("command: {} ({})", c, signal_name(sig)));
    if (!proc_) return;
    if (sig == SIGSTOP) paused_ = true;
    if (sig == SIGCONT) paused_ = false;
    if (sig == SIGTERM) got_term_ = true;
    (void)signal_process_group(proc_->pid(), sig);
    // As runsv does: after TERM, CONT, so a stopped worker can act on it.
    if (sig == SIGTERM) (void)signal_process_group(proc_->pid(), SIGCONT);
    return write_status();
  }
  switch (c) {
    case 'u':
    case 'o':  // up, but not restarted when it ends
      event(c == 'o' ? "command: once" : "command: up");
      want_ = "up";
      once_ = c == 'o';
      if (!proc_) {
        disarm_timer();
        backoff_ = milliseconds(0);
        if (auto r = start_worker(); !r) event("cannot start: " + r.error().message());
      }
      return write_status();
    case 'd':
      event("command: down");
      want_ = "down";
      if (proc_) return stop_worker();
      disarm_timer();
      return set_state("down");
    case 'x':
      event("command: exit");
      want_ = "exit";
      if (proc_) return stop_worker();
      return finish();
    default:
      return;
  }
}

void Supervisor::bad_command(std::string_view why, std::string_view what) {
  std::int64_t second = sd::now_ms() / 1000;
  if (second != bad_second_) {
    if (bad_suppressed_ > 0) {
      event(fmt::format("{} more bad commands ignored", bad_suppressed_));
    }
    bad_second_ = second;
    bad_in_second_ = 0;
    bad_suppressed_ = 0;
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
    event("message dropped: " + std::string(n.error() == std::errc::resource_unavailable_try_again
                                                ? "the worker's input is full"
                                                : n.error().message()));
  }
}

// ---------------------------------------------------------------- logging

void Supervisor::read_output(bool final_read) {
  if (!out_) return;
  char buf[4096];  // small: a touched stack page stays resident, times every supervisor
  for (;;) {
    ssize_t n = ::read(out_.get(), buf, sizeof buf);
    if (n == 0) {
      out_.reset();  // the worker (and all its children) closed it
      break;
    }
    if (n < 0) break;
    out_partial_.append(buf, static_cast<std::size_t>(n));
    std::size_t start = 0;
    for (;;) {
      auto nl = out_partial_.find('\n', start);
      if (nl == std::string::npos) break;
      log_line(std::string_view(out_partial_).substr(start, nl - start));
      start = nl + 1;
    }
    out_partial_.erase(0, start);
    if (out_partial_.size() >= sd::kMaxCommand) {  // a very long line: cut
      log_line(out_partial_);
      out_partial_.clear();
    }
  }
  if (final_read && !out_partial_.empty()) {
    log_line(out_partial_);
    out_partial_.clear();
  }
}

void Supervisor::event(std::string_view text) {
  log_line(fmt::format("[tether] {}", text));
}

void Supervisor::log_line(std::string_view text) {
  if (!log_) return;
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
  log_size_ = 0;
}

// ---------------------------------------------------------------- status

void Supervisor::set_state(std::string state) {
  if (state != state_) {
    state_ = std::move(state);
    ::clock_gettime(CLOCK_REALTIME, &since_ts_);
    since_ms_ = sd::now_ms();
  }
  write_status();
}

void Supervisor::write_status() {
  if (!renamed_ || done_ || dir_removed_) return;
  nlohmann::json j;
  j["id"] = spec_.id;
  j["name"] = spec_.name;
  j["state"] = state_;
  j["want"] = want_;
  j["pid"] = proc_ ? proc_->pid() : 0;
  j["supervisor_pid"] = ::getpid();
  j["since_ms"] = since_ms_;
  j["started_ms"] = started_ms_;
  j["restarts"] = restarts_;
  j["restart"] = spec_.restart == RestartPolicy::always       ? "always"
                 : spec_.restart == RestartPolicy::on_failure ? "on-failure"
                                                              : "never";
  j["command"] = spec_.command;
  if (last_exit_) {
    nlohmann::json e;
    if (last_exit_->signal()) e["signal"] = *last_exit_->signal();
    if (last_exit_->code()) e["code"] = *last_exit_->code();
    j["last_exit"] = e;
  }
  if (auto r = sd::write_atomically(final_ / sd::kStatusFile, j.dump() + "\n"); !r) {
    event("cannot write status: " + r.error().message());
  }
  // supervise/status in runit's 20-byte layout (daemontools reads the first
  // 18): TAI64N of the last change, pid (LE), paused, want, got TERM, run.
  unsigned char s[20] = {};
  std::uint64_t tai = 4611686018427387914ULL + static_cast<std::uint64_t>(since_ts_.tv_sec);
  for (int i = 7; i >= 0; --i, tai >>= 8) s[i] = static_cast<unsigned char>(tai & 0xff);
  auto nsec = static_cast<std::uint32_t>(since_ts_.tv_nsec);
  for (int i = 11; i >= 8; --i, nsec >>= 8) s[i] = static_cast<unsigned char>(nsec & 0xff);
  auto pid = static_cast<std::uint32_t>(proc_ ? proc_->pid() : 0);
  for (int i = 12; i < 16; ++i, pid >>= 8) s[i] = static_cast<unsigned char>(pid & 0xff);
  s[16] = paused_ ? 1 : 0;
  s[17] = want_ == "up" ? 'u' : 'd';
  s[18] = got_term_ && proc_ ? 1 : 0;
  s[19] = proc_ ? 1 : 0;
  (void)sd::write_atomically(final_ / "supervise/status",
                             std::string_view(reinterpret_cast<const char*>(s), sizeof s));
  // (runsv also keeps supervise/stat and supervise/pid; sv, svok, svstat and
  // svc read none of them, and each would be one more file replaced per change.)
}

void Supervisor::report(std::string_view line) {
  if (report_fd_ < 0) return;
  std::string text = spec_.id + " " + std::string(line);  // "<id> ok <pid>", "<id> error …"
  text += '\n';
  (void)write_some(report_fd_, std::as_bytes(std::span(text)), "report");
  ::close(report_fd_);
  report_fd_ = -1;
}

// After a change in our directory (dnotify): true when its lock or control
// FIFO is gone — removed by something other than us (we only rename status
// and log files, and remove nothing before finish()).
bool Supervisor::directory_lost() {
  for (const char* name : {sd::kLockFile, sd::kControlFifo}) {
    struct stat st {};
    if (::fstatat(dirfd_.get(), name, &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) {
      return true;
    }
  }
  return false;
}

void Supervisor::finish() {
  event("supervisor exiting");
  done_ = true;
  // Remove the directory while still holding the lock: a client sees the
  // worker either alive or gone, never a stale directory.
  if (dir_removed_) return;
  // Renamed away first, in one step, then removed: a client sees the
  // directory whole (lock held) or not at all, never half-removed.
  fs::path gone = final_.parent_path() / ("." + spec_.id + ".gone");
  std::error_code ec;
  if (::rename(final_.c_str(), gone.c_str()) != 0) gone = final_;
  fs::remove_all(gone, ec);
  dir_removed_ = !ec;
}

// ---------------------------------------------------------------- the loop

int Supervisor::run(int report_fd) {
  report_fd_ = report_fd;
  ::clock_gettime(CLOCK_REALTIME, &since_ts_);
  since_ms_ = sd::now_ms();
  if (auto r = setup(); !r) {
    report("error " + r.error().message());
    return 1;
  }
  if (auto r = start_worker(); !r) {
    report("error " + r.error().message());
    return 1;
  }
  if (!spec_.wait_ready) report(fmt::format("ok {} {}", proc_->pid(), ::getpid()));

  while (!done_) {
    enum { kControl, kSvControl, kSignal, kTimer, kPid, kOut, kReady, kCount };
    pollfd fds[kCount] = {
        {control_.get(), POLLIN, 0},
        {svcontrol_.get(), POLLIN, 0},
        {sigfd_.get(), POLLIN, 0},
        {timer_.get(), POLLIN, 0},
        {proc_ ? proc_->pidfd() : -1, POLLIN, 0},
        {out_.get(), POLLIN, 0},
        {ready_.get(), POLLIN, 0},
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
        set_state("up");
        if (proc_) report(fmt::format("ok {} {}", proc_->pid(), ::getpid()));
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
    if (fds[kSignal].revents) {
      signalfd_siginfo si{};
      bool child = false;
      while (::read(sigfd_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        int sig = static_cast<int>(si.ssi_signo);
        if (sig == SIGCHLD) {
          child = true;
        } else if (sig == dir_signal()) {
          if (!done_ && directory_lost()) {
            dir_removed_ = true;  // by someone else: nothing of ours to remove
            log_.reset();
            if (want_ != "exit") letter('x');
          }
        } else if (sig == SIGTERM || sig == SIGINT) {
          event("got " + signal_name(sig) + ": stopping the worker and exiting");
          if (want_ != "exit") letter('x');
        } else {
          event("got " + signal_name(sig) + ": ignored");
        }
      }
      if (child && !done_) reap_orphans();
    }
    if (done_) break;
    if (fds[kTimer].revents) on_timer();
    if (fds[kControl].revents) read_control(control_.get(), control_line_, control_discard_, false);
    if (fds[kSvControl].revents) {
      read_control(svcontrol_.get(), svcontrol_line_, svcontrol_discard_, true);
    }
  }
  return 0;
}

}  // namespace

int supervise_main(int argc, char** argv) {
  auto say = [](std::string_view id, const std::string& what) {
    std::string line = std::string(id) + " " + what + "\n";
    (void)write_some(3, std::as_bytes(std::span(line)), "report");
  };
  ::prctl(PR_SET_NAME, "tether-sup");  // what ps and pgrep show
  if (argc < 5 || (argc - 3) % 2 != 0) {
    say("-", "error usage: tether-supervise _supervise DIR ID SPEC [ID SPEC]… (internal)");
    return 2;
  }
  // One supervisor: run it here. Several: fork one each, and leave. Each
  // child decodes its own spec, so this process's heap stays almost empty:
  // the children share its pages, and what they allocate lands on fresh
  // pages of their own instead of in free chunks scattered over shared ones.
  auto run_one = [&](const char* id, const char* json) {
    auto dir = StateDir::open(argv[2], false);
    if (!dir) return say(id, "error " + dir.error().message()), 1;
    auto spec = decode_spec(json);
    if (!spec) return say(id, "error " + spec.error().message()), 1;
    if (spec->id != id) return say(id, "error the spec's id differs"), 1;
    return run_supervisor(*dir, *spec, 3);
  };
  if (argc == 5) return run_one(argv[3], argv[4]);
  for (int i = 3; i + 1 < argc; i += 2) {
    pid_t pid = ::fork();
    if (pid < 0) {
      say(argv[i], fmt::format("error fork: {}", std::strerror(errno)));
      continue;
    }
    if (pid == 0) {
      ::setsid();  // each leads its own session, as a lone one does
      ::_exit(run_one(argv[i], argv[i + 1]));
    }
    say(argv[i], fmt::format("forked {}", pid));
  }
  return 0;
}

int run_supervisor(const StateDir& dir, const SupervisorSpec& spec, int report_fd) {
  if (spec.command.empty()) {
    std::string line = spec.id + " error no command to supervise\n";
    (void)write_some(report_fd, std::as_bytes(std::span(line)), "report");
    return 2;
  }
  Supervisor s(dir, spec);
  return s.run(report_fd);
}

}  // namespace tether
