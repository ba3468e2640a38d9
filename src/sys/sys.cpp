#include "tether/sys.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

namespace tether {

// ---------------------------------------------------------------- errors

namespace {

class TetherCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "tether"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::end_of_stream:
        return "end of stream (the peer closed its end)";
      case errc::truncated:
        return "stream ended in the middle of a record";
      case errc::unsafe_fork:
        return "fork refused: other threads are running (see tether::fork)";
      case errc::not_spawned:
        return "no process (moved-from or never spawned)";
      case errc::no_such_worker:
        return "no such worker";
      case errc::ambiguous_name:
        return "the name is ambiguous";
      case errc::not_running:
        return "its supervisor is not listening";
      case errc::supervisor_gone:
        return "the supervisor is gone";
      case errc::not_a_fifo:
        return "not a FIFO";
      case errc::bad_record:
        return "malformed record";
      case errc::owner_died:
        return "the owner died";
      case errc::not_recoverable:
        return "not recoverable: a holder died and the state was never repaired";
      case errc::foreign_pid_namespace:
        return "shared with a process of another PID namespace, where robust locks do not work";
      case errc::broken_barrier:
        return "the barrier is broken";
      case errc::no_such_key:
        return "no such key";
      case errc::bad_definition:
        return "bad set file";
    }
    return fmt::format("tether error {}", value);
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const TetherCategory category;
  return category;
}

std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

std::string Error::message() const {
  std::string text = context_;
  if (!text.empty()) text += ": ";
  text += code_.message();
  if (auto name = errno_name(sys_errno()); !name.empty()) {
    text += " (";
    text += name;
    text += ')';
  }
  return text;
}

std::string_view errno_name(int err) noexcept {
  if (err <= 0) return {};
  const char* name = strerrorname_np(err);  // glibc 2.32+
  return name != nullptr ? std::string_view(name) : std::string_view();
}

std::string signal_name(int sig) {
  if (const char* abbrev = sigabbrev_np(sig); abbrev != nullptr) {  // glibc 2.32+
    return fmt::format("SIG{}", abbrev);
  }
  if (sig >= SIGRTMIN && sig <= SIGRTMAX) return fmt::format("SIGRTMIN+{}", sig - SIGRTMIN);
  return fmt::format("signal {}", sig);
}

std::optional<int> parse_signal(std::string_view text) {
  if (text.empty()) return std::nullopt;
  int n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec == std::errc() && end == text.data() + text.size()) {
    return n > 0 && n < NSIG ? std::optional<int>(n) : std::nullopt;
  }
  std::string upper;
  for (char c : text) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::string_view name = upper;
  if (name.starts_with("SIG")) name.remove_prefix(3);
  if (name.empty()) return std::nullopt;
  for (int sig = 1; sig < NSIG; ++sig) {
    std::string known = signal_name(sig);
    if (known.starts_with("SIG") && std::string_view(known).substr(3) == name) return sig;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- deadlines

std::optional<timespec> Deadline::absolute(clockid_t clock_id) const noexcept {
  if (is_never()) return std::nullopt;
  timespec now{};
  ::clock_gettime(clock_id, &now);
  auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(remaining()).count();
  // remaining() is zero once expired: "now" on the other clock, already past
  // by the time anyone waits on it.
  long long sec = static_cast<long long>(now.tv_sec) + left / 1'000'000'000;
  long long nsec = now.tv_nsec + left % 1'000'000'000;
  if (nsec >= 1'000'000'000) {
    ++sec;
    nsec -= 1'000'000'000;
  }
  return timespec{static_cast<time_t>(sec), static_cast<long>(nsec)};
}

Deadline::clock::time_point Deadline::from_now(double nanoseconds) noexcept {
  constexpr double century_ns = 100.0 * 365 * 24 * 3600 * 1e9;
  if (nanoseconds <= 0) return clock::time_point::min();
  if (nanoseconds >= century_ns) return clock::time_point::max();
  return clock::now() +
         std::chrono::ceil<clock::duration>(std::chrono::duration<double, std::nano>(nanoseconds));
}

Deadline::clock::duration Deadline::remaining() const noexcept {
  if (is_never()) return clock::duration::max();
  auto now = clock::now();
  // Compare before subtracting: immediate() is time_point::min(), and
  // min() - now overflows.
  return at_ > now ? at_ - now : clock::duration::zero();
}

// ---------------------------------------------------------------- Fd

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);  // never retried: the descriptor is gone either way
  fd_ = fd;
}

Result<void> Fd::close() noexcept {
  int fd = release();
  if (fd < 0) return {};
  if (::close(fd) != 0) return fail(errno, fmt::format("close fd {}", fd));
  return {};
}

Result<Fd> Fd::duplicate() const {
  int copy = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return fail(errno, fmt::format("duplicate fd {}", fd_));
  return Fd(copy);
}

Result<bool> Fd::nonblocking() const {
  int flags = ::fcntl(fd_, F_GETFL);
  if (flags < 0) return fail(errno, fmt::format("get flags of fd {}", fd_));
  return (flags & O_NONBLOCK) != 0;
}

Result<void> Fd::set_nonblocking(bool on) const {
  int flags = ::fcntl(fd_, F_GETFL);
  if (flags < 0) return fail(errno, fmt::format("get flags of fd {}", fd_));
  int wanted = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (wanted != flags && ::fcntl(fd_, F_SETFL, wanted) != 0) {
    return fail(errno, fmt::format("set O_NONBLOCK on fd {}", fd_));
  }
  return {};
}

// ---------------------------------------------------------------- Pidfd

Result<Pidfd> Pidfd::open(pid_t pid) {
  if (pid <= 0) return fail(EINVAL, fmt::format("open a pidfd for pid {} (refused)", pid));
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return fail(errno, fmt::format("open a pidfd for pid {}", pid));
  return Pidfd(Fd(fd), pid);
}

Result<void> Pidfd::send_signal(int sig) const {
  if (::syscall(SYS_pidfd_send_signal, fd_.get(), sig, nullptr, 0) != 0) {
    return fail(errno, fmt::format("send {} to process {}", signal_name(sig), pid_));
  }
  return {};
}

bool Pidfd::ended() const {
  pollfd p{fd_.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP)) != 0;
}

Result<void> Pidfd::wait_ended(Deadline deadline, std::string_view what) const {
  if (auto r = wait_fd(fd_.get(), POLLIN, deadline, what); !r) return std::unexpected(r.error());
  return {};
}

// ---------------------------------------------------------------- I/O

Result<std::size_t> read_some(int fd, std::span<std::byte> buf, std::string_view what) {
  ssize_t n = retry_eintr([&] { return ::read(fd, buf.data(), buf.size()); });
  if (n < 0) return fail(errno, fmt::format("read {}", what));
  return static_cast<std::size_t>(n);
}

namespace {

#ifndef RWF_NOSIGNAL
constexpr int RWF_NOSIGNAL = 0x00000100;  // include/uapi/linux/fs.h, Linux 6.16
#endif

// 1: pwritev2(RWF_NOSIGNAL) works; 0: it does not; -1: not probed yet.
std::atomic<int> nosignal_support{-1};
// Set by ignore_sigpipe(): SIGPIPE cannot kill us, plain write(2) is safe.
std::atomic<bool> sigpipe_ignored{false};

// Fallback: block SIGPIPE in this thread around the write, and swallow the
// SIGPIPE our own write raised (one that was pending before is left alone).
ssize_t writev_with_sigpipe_blocked(int fd, const iovec* iov, int count, int extra) {
  sigset_t pipe_set, old_mask, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigpending(&pending);
  bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
  ssize_t n = extra != 0 ? ::pwritev2(fd, iov, count, -1, extra) : ::writev(fd, iov, count);
  int saved = errno;
  if (n < 0 && saved == EPIPE && !was_pending) {
    const timespec zero{};
    while (sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  errno = saved;
  return n;
}

// `extra`: more pwritev2 flags (RWF_NOWAIT), or 0.
ssize_t writev_nosignal(int fd, const iovec* iov, int count, int extra) {
  if (sigpipe_ignored.load(std::memory_order_relaxed) && !detail::force_sigpipe_fallback) {
    if (extra != 0) return ::pwritev2(fd, iov, count, -1, extra);
    return count == 1 ? ::write(fd, iov[0].iov_base, iov[0].iov_len) : ::writev(fd, iov, count);
  }
  int support = nosignal_support.load(std::memory_order_relaxed);
  if (support != 0 && !detail::force_sigpipe_fallback) {
    ssize_t n = ::pwritev2(fd, iov, count, -1, RWF_NOSIGNAL | extra);
    if (n >= 0 || errno != EOPNOTSUPP) {
      if (support < 0) nosignal_support.store(1, std::memory_order_relaxed);
      return n;
    }
    // EOPNOTSUPP: the kernel does not know the flag (or this file type
    // refuses it); the probe is only cached for a plain write's answer.
    // With RWF_NOSIGNAL known to work, it is `extra` the file refuses.
    if (support > 0 && extra != 0) return -1;
    if (support < 0 && extra == 0) nosignal_support.store(0, std::memory_order_relaxed);
  }
  return writev_with_sigpipe_blocked(fd, iov, count, extra);
}

ssize_t write_nosignal(int fd, const void* data, std::size_t size) {
  iovec iov{const_cast<void*>(data), size};
  return writev_nosignal(fd, &iov, 1, 0);
}

}  // namespace

bool kernel_has_write_nosignal() noexcept {
  if (nosignal_support.load() < 0) {
    auto ends = make_pipe();
    if (ends) {
      char byte = 0;
      (void)write_nosignal(ends->second.get(), &byte, 1);
    }
  }
  return nosignal_support.load() == 1;
}

Result<std::size_t> writev_some(int fd, std::span<const iovec> buffers, std::string_view what,
                                int rwf_flags) {
  ssize_t n = retry_eintr([&] {
    return writev_nosignal(fd, buffers.data(), static_cast<int>(buffers.size()), rwf_flags);
  });
  if (n < 0) return fail(errno, fmt::format("write {}", what));
  return static_cast<std::size_t>(n);
}

Result<void> ignore_sigpipe() {
  struct sigaction sa {};
  sa.sa_handler = SIG_IGN;
  if (::sigaction(SIGPIPE, &sa, nullptr) != 0) return fail(errno, "ignore SIGPIPE");
  sigpipe_ignored.store(true);
  return {};
}

Result<std::size_t> write_some(int fd, std::span<const std::byte> data, std::string_view what) {
  ssize_t n = retry_eintr([&] { return write_nosignal(fd, data.data(), data.size()); });
  if (n < 0) return fail(errno, fmt::format("write {}", what));
  return static_cast<std::size_t>(n);
}

Result<void> write_all(int fd, std::span<const std::byte> data, std::string_view what) {
  while (!data.empty()) {
    auto n = write_some(fd, data, what);
    if (!n) return std::unexpected(n.error());
    data = data.subspan(*n);
  }
  return {};
}

Result<int> poll_fds(std::span<pollfd> fds, Deadline deadline) {
  for (;;) {
    int n;
    if (detail::injected_eintr > 0) {
      --detail::injected_eintr;
      n = -1;
      errno = EINTR;
    } else if (deadline.is_never()) {
      n = ::ppoll(fds.data(), fds.size(), nullptr, nullptr);
    } else {
      auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.remaining());
      timespec ts{static_cast<time_t>(left.count() / 1'000'000'000),
                  static_cast<long>(left.count() % 1'000'000'000)};
      n = ::ppoll(fds.data(), fds.size(), &ts, nullptr);
    }
    if (n >= 0) return n;
    if (errno != EINTR) return fail(errno, "poll");
  }
}

Result<short> wait_fd(int fd, short events, Deadline deadline, std::string_view what) {
  pollfd p{fd, events, 0};
  auto n = poll_fds({&p, 1}, deadline);
  if (!n) return fail(n.error(), fmt::format("wait for {}", what));
  if (*n == 0) return fail(ETIMEDOUT, fmt::format("wait for {}", what));
  if (p.revents & POLLNVAL) return fail(EBADF, fmt::format("wait for {}", what));
  return p.revents;
}

// ---------------------------------------------------------------- lines

std::optional<LineReader::Line> LineReader::next() {
  for (;;) {
    std::string_view pending = std::string_view(buffer_).substr(start_);
    auto nl = pending.find('\n');
    if (discarding_) {
      if (nl == std::string_view::npos) {
        buffer_.clear();
        start_ = 0;
        return std::nullopt;
      }
      discarding_ = false;
      start_ += nl + 1;
      continue;
    }
    if (nl != std::string_view::npos && nl <= max_) {
      line_.assign(pending.substr(0, nl));
      start_ += nl + 1;
      if (start_ == buffer_.size()) buffer_.clear(), start_ = 0;
      return Line{line_, false};
    }
    if (pending.size() > max_ || (nl != std::string_view::npos)) {
      // A line longer than max_: its first max_ bytes now.
      line_.assign(pending.substr(0, max_));
      start_ += max_;
      if (overlong_ == Overlong::discard) discarding_ = true;
      if (start_ == buffer_.size()) buffer_.clear(), start_ = 0;
      return Line{line_, true};
    }
    // Incomplete: keep it, compacted, for the next feed.
    if (start_ > 0) {
      buffer_.erase(0, start_);
      start_ = 0;
    }
    return std::nullopt;
  }
}

std::string LineReader::take_partial() {
  std::string out = discarding_ ? std::string() : buffer_.substr(start_);
  drop_partial();
  return out;
}

void LineReader::drop_partial() noexcept {
  buffer_.clear();
  start_ = 0;
  discarding_ = false;
}

Result<std::pair<Fd, Fd>> make_pipe(bool nonblocking) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0)) != 0) {
    return fail(errno, "create pipe");
  }
  return std::pair<Fd, Fd>{Fd(fds[0]), Fd(fds[1])};
}

Result<int> count_open_fds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return fail(errno, "open /proc/self/fd");
  int count = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count - 1;  // the directory stream's own descriptor
}

}  // namespace tether
