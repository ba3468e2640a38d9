#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <termios.h>

#include <algorithm>
#include <fstream>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "internal.hpp"

namespace tether {

// ---------------------------------------------------------------- status

Usage Usage::from_rusage(const rusage& ru) noexcept {
  auto micros = [](const timeval& tv) {
    return std::chrono::microseconds(tv.tv_sec * 1'000'000L + tv.tv_usec);
  };
  Usage u;
  u.user_cpu = micros(ru.ru_utime);
  u.system_cpu = micros(ru.ru_stime);
  u.max_rss_kib = ru.ru_maxrss;
  u.minor_faults = ru.ru_minflt;
  u.major_faults = ru.ru_majflt;
  u.voluntary_switches = ru.ru_nvcsw;
  u.involuntary_switches = ru.ru_nivcsw;
  return u;
}

ExitStatus ExitStatus::exited(int code, pid_t pid, Usage usage) noexcept {
  ExitStatus s;
  s.value_ = code;
  s.pid_ = pid;
  s.usage_ = usage;
  return s;
}

ExitStatus ExitStatus::killed(int signal, bool core_dumped, pid_t pid, Usage usage) noexcept {
  ExitStatus s;
  s.signaled_ = true;
  s.value_ = signal;
  s.core_dumped_ = core_dumped;
  s.pid_ = pid;
  s.usage_ = usage;
  return s;
}

ExitStatus ExitStatus::from_wait_status(int status, pid_t pid, Usage usage) noexcept {
  if (WIFSIGNALED(status)) return killed(WTERMSIG(status), WCOREDUMP(status), pid, usage);
  return exited(WEXITSTATUS(status), pid, usage);
}

std::string ExitStatus::describe() const {
  if (!signaled_) return fmt::format("exited with code {}", value_);
  return fmt::format("killed by {}{}", signal_name(value_), core_dumped_ ? " (core dumped)" : "");
}

namespace detail {

ExitStatus status_from_siginfo(const siginfo_t& info, const rusage& ru) noexcept {
  Usage usage = Usage::from_rusage(ru);
  if (info.si_code == CLD_EXITED) return ExitStatus::exited(info.si_status, info.si_pid, usage);
  return ExitStatus::killed(info.si_status, info.si_code == CLD_DUMPED, info.si_pid, usage);
}

}  // namespace detail

// ---------------------------------------------------------------- Process

Process::Process(Process&& other) noexcept
    : pidfd_(std::move(other.pidfd_)),
      pid_(std::exchange(other.pid_, 0)),
      pgid_(std::exchange(other.pgid_, 0)),
      owner_(other.owner_),
      name_(std::move(other.name_)),
      stdin_(std::move(other.stdin_)),
      stdout_(std::move(other.stdout_)),
      stderr_(std::move(other.stderr_)),
      pty_(std::move(other.pty_)),
      status_(std::exchange(other.status_, std::nullopt)),
      reaped_elsewhere_(other.reaped_elsewhere_),
      on_drop_(other.on_drop_),
      drop_grace_(other.drop_grace_) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    drop();
    pidfd_ = std::move(other.pidfd_);
    pid_ = std::exchange(other.pid_, 0);
    pgid_ = std::exchange(other.pgid_, 0);
    owner_ = other.owner_;
    name_ = std::move(other.name_);
    stdin_ = std::move(other.stdin_);
    stdout_ = std::move(other.stdout_);
    stderr_ = std::move(other.stderr_);
    pty_ = std::move(other.pty_);
    status_ = std::exchange(other.status_, std::nullopt);
    reaped_elsewhere_ = other.reaped_elsewhere_;
    on_drop_ = other.on_drop_;
    drop_grace_ = other.drop_grace_;
  }
  return *this;
}

Process::~Process() {
  drop();
}

Process Process::adopt(Fd pidfd, pid_t pid, std::string name) noexcept {
  Process p;
  p.pidfd_ = Pidfd(std::move(pidfd), pid);
  p.pid_ = pid;
  p.owner_ = ::getpid();
  p.name_ = std::move(name);
  return p;
}

void Process::drop() noexcept {
  // A copy of this object inherited by a fork child must never signal or
  // reap its parent's child: only the creating process acts.
  if (!pidfd_.valid() || status_ || reaped_elsewhere_ || owner_ != ::getpid()) {
    pidfd_.reset();
    return;
  }
  // Our pipe ends go first, so a child blocked writing to us cannot
  // deadlock a waiting destructor. Closing a pty master hangs the terminal
  // up: the child gets SIGHUP, and EIO instead of a write that waits.
  stdin_.reset();
  stdout_.reset();
  stderr_.reset();
  pty_.handle().reset();
  try {
    switch (on_drop_) {
      case OnDrop::kill:
        (void)kill();
        break;
      case OnDrop::terminate:
        (void)terminate(drop_grace_);
        break;
      case OnDrop::wait:
        (void)reap(true);
        break;
      case OnDrop::detach:
        detach();
        break;
    }
  } catch (...) {  // only bad_alloc could get here; a destructor must not throw
  }
  pidfd_.reset();
}

void Process::detach() noexcept {
  if (pidfd_.valid() && !status_ && !reaped_elsewhere_ && owner_ == ::getpid()) {
    detail::detach_to_reaper(pidfd_.release());
  }
  pidfd_.reset();
  stdin_.reset();
  stdout_.reset();
  stderr_.reset();
  pty_.handle().reset();
  pid_ = 0;
}

Result<std::optional<ExitStatus>> Process::reap(bool block) {
  if (status_) return status_;
  if (!pidfd_.valid()) return fail(errc::not_spawned, "wait for process");
  siginfo_t info{};
  rusage ru{};
  int options = WEXITED | (block ? 0 : WNOHANG);
  int r = retry_eintr(
      [&] { return detail::waitid_rusage(P_PIDFD, pidfd_.get(), &info, options, &ru); });
  if (r < 0) {
    if (errno == ECHILD) {
      reaped_elsewhere_ = true;
      return fail(ECHILD, fmt::format("wait for process {} ({}): it was already reaped elsewhere "
                                      "in this program",
                                      pid_, name_));
    }
    return fail(errno, fmt::format("wait for process {} ({})", pid_, name_));
  }
  if (info.si_pid == 0) return std::optional<ExitStatus>();
  status_ = detail::status_from_siginfo(info, ru);
  return status_;
}

Result<ExitStatus> Process::wait(Deadline deadline) {
  if (deadline.is_never()) {
    auto r = reap(true);
    if (!r) return std::unexpected(r.error());
    return **r;
  }
  for (;;) {
    auto r = reap(false);
    if (!r) return std::unexpected(r.error());
    if (*r) return **r;
    // The pidfd turns readable when the child exits (pidfd_open(2)).
    auto ready =
        wait_fd(pidfd_.get(), POLLIN, deadline, fmt::format("process {} ({})", pid_, name_));
    if (!ready) return std::unexpected(ready.error());
  }
}

Result<std::optional<ExitStatus>> Process::try_wait() {
  return reap(false);
}

Result<void> Process::signal(int sig) const {
  if (!pidfd_.valid()) return fail(errc::not_spawned, "signal process");
  if (status_) {
    return fail(ESRCH, fmt::format("send {} to process {} ({}): it has already ended",
                                   signal_name(sig), pid_, name_));
  }
  if (auto r = pidfd_.send_signal(sig); !r) {
    return fail(r.error().code().value(),
                fmt::format("send {} to process {} ({})", signal_name(sig), pid_, name_));
  }
  return {};
}

Result<void> Process::signal_group(int sig) const {
  if (pgid_ <= 0) {
    return fail(EINVAL, fmt::format("send {} to the group of process {} ({}): it was not started "
                                    "in a process group of its own",
                                    signal_name(sig), pid_, name_));
  }
  return signal_process_group(pgid_, sig);
}

Result<ExitStatus> Process::terminate(std::chrono::milliseconds grace) {
  if (status_) return *status_;
  if (auto s = signal(SIGTERM); !s && s.error() != std::errc::no_such_process) {
    return std::unexpected(s.error());
  }
  auto st = wait(grace);
  if (st || st.error() != std::errc::timed_out) return st;
  return kill();
}

Result<ExitStatus> Process::kill() {
  if (status_) return *status_;
  if (auto s = signal(SIGKILL); !s && s.error() != std::errc::no_such_process) {
    return std::unexpected(s.error());
  }
  return wait();
}

Result<Output> Process::communicate(std::string_view input, Deadline deadline) {
  // The terminal stands in for the streams that are not pipes. pump()
  // closes what it is given at end of stream, so it gets duplicates of the
  // master: the master itself stays open until the child is reaped. The
  // child closes its terminal (end of stream for us) a moment before it
  // exits; closing the last master in that moment would hang the terminal
  // up and kill the child with SIGHUP (cat, which closes stdout at exit to
  // check for write errors, lost that race).
  const std::string what = fmt::format("communicate with process {} ({})", pid_, name_);
  bool type_on_pty = pty_.valid() && !stdin_.valid();
  bool show_on_out = pty_.valid() && !stdout_.valid();
  bool show_on_err = pty_.valid() && !show_on_out && !stderr_.valid();
  if (!input.empty() && !stdin_.valid() && !type_on_pty) {
    return fail(EINVAL, what + ": input given but its stdin is not a pipe");
  }
  Fd typing, showing;
  std::string typed;
  if (type_on_pty) {
    // A terminal cannot be half-closed: end of input is the VEOF character,
    // which ends the child's read at once; at the start of a line that
    // read returns 0, after part of a line it returns the part, so a second
    // one is needed (termios(3), "Canonical and noncanonical mode").
    // Raw mode has no such character: the input goes as it is.
    termios t{};
    if (::tcgetattr(pty_.fd(), &t) != 0) {
      return fail(errno, fmt::format("{}: tcgetattr on pty {}", what, pty_.slave_name()));
    }
    typed = input;
    if ((t.c_lflag & ICANON) != 0 && t.c_cc[VEOF] != _POSIX_VDISABLE) {
      char eof = static_cast<char>(t.c_cc[VEOF]);
      if (!typed.empty() && typed.back() != '\n') typed += eof;
      typed += eof;
    }
    auto dup = pty_.handle().duplicate();
    if (!dup) return fail(dup.error(), what);
    typing = std::move(*dup);
    input = typed;
  }
  if (show_on_out || show_on_err) {
    auto dup = pty_.handle().duplicate();
    if (!dup) return fail(dup.error(), what);
    showing = std::move(*dup);
  }
  Output result;
  auto pumped = detail::pump(type_on_pty ? typing : stdin_, input, show_on_out ? showing : stdout_,
                             result.out, show_on_err ? showing : stderr_, result.err, deadline,
                             fmt::format("process {} ({})", pid_, name_));
  if (!pumped) return std::unexpected(pumped.error());
  auto st = wait(deadline);
  if (!st) return std::unexpected(st.error());
  result.status = *st;
  return result;
}

// ---------------------------------------------------------------- pump

namespace detail {

Result<void> pump(Fd& in, std::string_view input, Fd& out, std::string& out_text, Fd& err,
                  std::string& err_text, Deadline deadline, std::string_view what) {
  for (Fd* fd : {&in, &out, &err}) {
    if (fd->valid()) {
      if (auto r = fd->set_nonblocking(true); !r) return fail(r.error(), fmt::format("{}", what));
    }
  }
  if (input.empty()) in.reset();  // immediate end of file for the child
  std::size_t written = 0;
  constexpr std::size_t chunk = std::size_t{64} * 1024;

  auto drain = [&](Fd& fd, std::string& text, std::string_view stream) -> Result<void> {
    for (;;) {
      std::size_t old = text.size();
      text.resize(old + chunk);
      auto n = read_some(fd.get(), std::as_writable_bytes(std::span(text).subspan(old)), stream);
      text.resize(old + (n ? *n : 0));
      if (!n) {
        if (n.error() == std::errc::resource_unavailable_try_again) return {};
        // A pty master whose slave is closed everywhere: EIO is its end of
        // stream (see read_master in pty.cpp). isatty() only on this path.
        if (n.error() == std::errc::io_error && ::isatty(fd.get()) == 1) {
          fd.reset();
          return {};
        }
        return std::unexpected(n.error());
      }
      if (*n == 0) {
        fd.reset();  // end of stream
        return {};
      }
    }
  };

  while (in.valid() || out.valid() || err.valid()) {
    pollfd fds[3];
    Fd* owners[3];
    nfds_t count = 0;
    if (in.valid()) {
      fds[count] = {in.get(), POLLOUT, 0};
      owners[count++] = &in;
    }
    for (Fd* fd : {&out, &err}) {
      if (fd->valid()) {
        fds[count] = {fd->get(), POLLIN, 0};
        owners[count++] = fd;
      }
    }
    auto ready = poll_fds({fds, count}, deadline);
    if (!ready) return fail(ready.error(), fmt::format("exchange data with {}", what));
    if (*ready == 0) return fail(ETIMEDOUT, fmt::format("exchange data with {}", what));
    for (nfds_t i = 0; i < count; ++i) {
      if (fds[i].revents == 0) continue;
      if (owners[i] == &in) {
        auto n = write_some(in.get(), std::as_bytes(std::span(input.substr(written))), "stdin");
        if (n) {
          written += *n;
          if (written == input.size()) in.reset();
        } else if (n.error() == std::errc::broken_pipe) {
          in.reset();  // the child stopped reading: not an error, as in Python
        } else if (n.error() != std::errc::resource_unavailable_try_again) {
          return fail(n.error(), fmt::format("feed {}", what));
        }
      } else {
        auto r = drain(*owners[i], owners[i] == &out ? out_text : err_text,
                       owners[i] == &out ? "stdout" : "stderr");
        if (!r) return fail(r.error(), fmt::format("collect output of {}", what));
      }
    }
  }
  return {};
}

// ---------------------------------------------------------------- reaper

namespace {

// One background thread, started on first use, that reaps detached
// children as they end. It polls their pidfds plus an eventfd that wakes it
// when a new child arrives. It is never stopped: it lives as long as the
// process, like the children it watches.
class Reaper {
 public:
  static Reaper& instance() {
    static Reaper* reaper = new Reaper();  // never destroyed: the thread outlives statics
    return *reaper;
  }

  void add(Fd pidfd) {
    {
      std::lock_guard lock(mutex_);
      incoming_.push_back(std::move(pidfd));
    }
    std::uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }

 private:
  Reaper() : wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    std::thread([this] { run(); }).detach();
  }

  void run() {
    std::vector<Fd> watched;
    std::vector<pollfd> fds;
    for (;;) {
      fds.clear();
      fds.push_back({wake_.get(), POLLIN, 0});
      for (const Fd& fd : watched) fds.push_back({fd.get(), POLLIN, 0});
      if (!poll_fds(fds, Deadline::never())) continue;
      if (fds[0].revents != 0) {
        std::uint64_t count;
        (void)!::read(wake_.get(), &count, sizeof count);
        std::lock_guard lock(mutex_);
        for (Fd& fd : incoming_) watched.push_back(std::move(fd));
        incoming_.clear();
      }
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        siginfo_t info{};
        rusage ru{};
        (void)waitid_rusage(P_PIDFD, watched[i - 1].get(), &info, WEXITED | WNOHANG, &ru);
        watched[i - 1].reset();
      }
      std::erase_if(watched, [](const Fd& fd) { return !fd.valid(); });
    }
  }

  Fd wake_;
  std::mutex mutex_;
  std::vector<Fd> incoming_;
};

}  // namespace

void detach_to_reaper(Fd pidfd) noexcept {
  try {
    Reaper::instance().add(std::move(pidfd));
  } catch (...) {  // out of memory: the child stays a zombie until we exit
  }
}

}  // namespace detail

// ---------------------------------------------------------------- many children

Result<AnyExit> wait_any(std::span<Process> processes, Deadline deadline) {
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<std::size_t> index;
    for (std::size_t i = 0; i < processes.size(); ++i) {
      if (processes[i].valid() && !processes[i].status()) {
        fds.push_back({processes[i].pidfd(), POLLIN, 0});
        index.push_back(i);
      }
    }
    if (fds.empty()) return fail(ECHILD, "wait for any of the processes: none is left to wait for");
    auto ready = poll_fds(fds, deadline);
    if (!ready) return fail(ready.error(), "wait for any of the processes");
    if (*ready == 0) return fail(ETIMEDOUT, "wait for any of the processes");
    for (std::size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      auto r = processes[index[k]].reap(false);
      if (!r) return std::unexpected(r.error());
      if (*r) return AnyExit{index[k], **r};
    }
  }
}

namespace {

// One waitid(P_ALL): nullopt when children run but none has ended.
Result<std::optional<ExitStatus>> wait_any_child_once(bool block) {
  siginfo_t info{};
  rusage ru{};
  int options = WEXITED | (block ? 0 : WNOHANG);
  int r = retry_eintr([&] { return detail::waitid_rusage(P_ALL, 0, &info, options, &ru); });
  if (r < 0) return fail(errno, "wait for any child");
  if (info.si_pid == 0) return std::optional<ExitStatus>();
  return detail::status_from_siginfo(info, ru);
}

}  // namespace

Result<ExitStatus> wait_any_child(Deadline deadline) {
  Backoff backoff{std::chrono::milliseconds(1), std::chrono::milliseconds(20)};
  for (;;) {
    auto r = wait_any_child_once(deadline.is_never());
    if (!r) return std::unexpected(r.error());
    if (*r) return **r;
    if (!backoff.wait(deadline)) return fail(ETIMEDOUT, "wait for any child");
  }
}

Result<std::vector<ExitStatus>> reap_finished_children() {
  std::vector<ExitStatus> reaped;
  for (;;) {
    auto r = wait_any_child_once(false);
    if (!r) {
      if (r.error() == std::errc::no_child_process) return reaped;
      return std::unexpected(r.error());
    }
    if (!*r) return reaped;
    reaped.push_back(**r);
  }
}

Result<void> set_child_subreaper(bool on) {
  if (::prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0) != 0) {
    return fail(errno, "set child subreaper");
  }
  return {};
}

Result<bool> is_child_subreaper() {
  int value = 0;
  if (::prctl(PR_GET_CHILD_SUBREAPER, &value, 0, 0, 0) != 0)
    return fail(errno, "get child subreaper");
  return value != 0;
}

Result<void> signal_process_group(pid_t pgid, int sig) {
  if (pgid <= 0)
    return fail(EINVAL, fmt::format("send {} to process group {}", signal_name(sig), pgid));
  if (::kill(-pgid, sig) != 0) {
    return fail(errno, fmt::format("send {} to process group {}", signal_name(sig), pgid));
  }
  return {};
}

Result<int> thread_count() {
  std::ifstream stat("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // Field 20 (num_threads); the command name (field 2) may hold spaces and
  // parentheses, so count fields from the last ')'.
  auto close = text.rfind(')');
  if (close == std::string::npos) return fail(EIO, "read /proc/self/stat");
  std::size_t pos = close + 2;
  for (int field = 3; field < 20; ++field) {
    pos = text.find(' ', pos);
    if (pos == std::string::npos) return fail(EIO, "parse /proc/self/stat");
    ++pos;
  }
  return std::stoi(text.substr(pos));
}

}  // namespace tether
