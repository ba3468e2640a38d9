// tether/sys.hpp — the ground layer: errors, file descriptors, deadlines, poll.
//
// Every fallible call in tether returns `tether::Result<T>`, a
// `std::expected<T, tether::Error>`. An `Error` keeps the raw `std::error_code`
// (errno in `std::system_category()`, or a `tether::errc`) together with the
// operation and the object it concerns, so a person can be told
// "spawn /no/such/prog: No such file or directory (ENOENT)" while a program
// can still test `err == std::errc::no_such_file_or_directory`.
//
// Timeouts (`std::errc::timed_out`), would-block
// (`std::errc::resource_unavailable_try_again`), a closed peer
// (`std::errc::broken_pipe`, `tether::errc::end_of_stream`) are ordinary
// errors: tether never throws for them.
#pragma once

#include <poll.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

namespace tether {

// ---------------------------------------------------------------- errors

// Conditions that have no errno of their own, or whose errno would mean two
// things (ESRCH is both "no such process" from kill(2) and, borrowed, "no
// such worker"; a program tells them apart by these codes, and the tether
// command maps these codes, never errnos, to its exit codes).
enum class errc {
  end_of_stream = 1,      // the peer closed its end; no more data will come
  truncated,              // the stream ended in the middle of a record
  unsafe_fork,            // fork() asked for while other threads run
  not_spawned,            // the object holds no process (moved-from or default)
  no_such_worker,         // no worker has that id, name or pid
  ambiguous_name,         // several live workers answer to that name
  not_running,            // the worker's supervisor is not listening
  supervisor_gone,        // the supervisor ended before doing what was asked
  not_a_fifo,             // a path that must be our FIFO holds something else
  bad_record,             // a file another process wrote does not parse (status.json, a report)
  owner_died,             // the holder of a lock died; the data it guarded may be inconsistent
  not_recoverable,        // a lock whose owner died was never made consistent again
  foreign_pid_namespace,  // a robust lock shared across PID namespaces, where it cannot work
  broken_barrier,         // a party of a barrier died or timed out (Python's BrokenBarrierError)
  no_such_key,            // a Dict holds no such key (Python's KeyError)
  bad_definition,  // a set's file (tether.toml, Procfile) is malformed: file:line:col says where
};

const std::error_category& error_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

}  // namespace tether

template <>
struct std::is_error_code_enum<tether::errc> : std::true_type {};

namespace tether {

// An error code plus what was being done to what ("wait for process 1234").
// Compares equal to error codes, errno conditions and tether::errc values.
class Error {
 public:
  Error(std::error_code code, std::string context) noexcept
      : code_(code), context_(std::move(context)) {}
  Error(errc code, std::string context) noexcept
      : Error(make_error_code(code), std::move(context)) {}

  // From an errno value.
  static Error from_errno(int err, std::string context) noexcept {
    return Error(std::error_code(err, std::system_category()), std::move(context));
  }

  const std::error_code& code() const noexcept { return code_; }
  const std::string& context() const noexcept { return context_; }
  // errno value, or 0 when the code is not from the system category.
  int sys_errno() const noexcept {
    return code_.category() == std::system_category() ? code_.value() : 0;
  }

  // "context: description (ENAME)" — for people, at the edge of a program.
  std::string message() const;

  friend bool operator==(const Error& e, const std::error_code& c) noexcept { return e.code_ == c; }
  template <class E>
  requires std::is_error_code_enum_v<E> || std::is_error_condition_enum_v<E>
  friend bool operator==(const Error& e, E value) noexcept { return e.code_ == value; }

 private:
  std::error_code code_;
  std::string context_;
};

template <class T>
using Result = std::expected<T, Error>;

// `return fail(errno, "open " + path);`
inline std::unexpected<Error> fail(int err, std::string context) noexcept {
  return std::unexpected(Error::from_errno(err, std::move(context)));
}
inline std::unexpected<Error> fail(errc code, std::string context) noexcept {
  return std::unexpected(Error(code, std::move(context)));
}
// Same error, with more context in front: "spawn ls: " + inner context.
inline std::unexpected<Error> fail(const Error& inner, std::string_view outer) {
  std::string ctx(outer);
  if (!inner.context().empty()) ctx += ": " + inner.context();
  return std::unexpected(Error(inner.code(), std::move(ctx)));
}

// Symbolic name of an errno value ("ENOENT"), or "" if unknown.
std::string_view errno_name(int err) noexcept;
// Name of a signal ("SIGKILL"), or "signal N".
std::string signal_name(int sig);
// A signal from "TERM", "SIGTERM", "sigterm" or "15" (1 to NSIG-1, real-time
// ones as "RTMIN+3"); nullopt for anything else ("", "0", "99", "BOGUS").
std::optional<int> parse_signal(std::string_view text);

// ---------------------------------------------------------------- syscalls

namespace detail {
// Test hook: the next `n` calls made through retry_eintr() on this thread
// behave as if interrupted by a signal before doing anything, so that tests
// can prove every retry loop resumes correctly.
inline thread_local int injected_eintr = 0;
// Test hook: write_some() takes the signal-mask path of kernels without
// RWF_NOSIGNAL even where the kernel has it.
inline thread_local bool force_sigpipe_fallback = false;
}  // namespace detail

// Runs `call` (a syscall returning -1 + errno on failure) again while it fails
// with EINTR. Only for calls that are safe to restart: never for close(2),
// and not for calls whose timeout must shrink (use poll_fds for those).
template <class F>
auto retry_eintr(F&& call) -> decltype(call()) {
  for (;;) {
    if (detail::injected_eintr > 0) {
      --detail::injected_eintr;
      continue;
    }
    auto r = call();
    if (r != -1 || errno != EINTR) return r;
  }
}

// ---------------------------------------------------------------- deadlines

// A point in time after which a blocking call gives up with
// std::errc::timed_out. Converts implicitly from a duration (`p.wait(2s)`).
// Deadline::never() blocks for as long as it takes; Deadline::immediate() is
// already expired, which turns a blocking call into a non-blocking attempt.
class Deadline {
 public:
  using clock = std::chrono::steady_clock;

  constexpr Deadline() noexcept : at_(clock::time_point::max()) {}  // never
  template <class Rep, class Period>
  Deadline(std::chrono::duration<Rep, Period> d) noexcept  // NOLINT: implicit on purpose
      : at_(from_now(std::chrono::duration<double, std::nano>(d).count())) {}

  static constexpr Deadline never() noexcept { return Deadline(); }
  static Deadline immediate() noexcept { return Deadline(clock::time_point::min()); }
  static Deadline at(clock::time_point t) noexcept { return Deadline(t); }

  bool is_never() const noexcept { return at_ == clock::time_point::max(); }
  bool expired() const noexcept { return !is_never() && clock::now() >= at_; }
  clock::time_point time_point() const noexcept { return at_; }
  // Time left: zero once expired, clock::duration::max() for never.
  clock::duration remaining() const noexcept;
  // The earlier of two deadlines.
  friend Deadline min(Deadline a, Deadline b) noexcept { return a.at_ <= b.at_ ? a : b; }
  // The same instant as an absolute timespec on `clock_id` (CLOCK_MONOTONIC,
  // for pthread_cond_clockwait, sem_clockwait, futex waits with
  // FUTEX_CLOCK_MONOTONIC unset; CLOCK_REALTIME only for the calls that know
  // no other, such as mq_timedreceive). An expired deadline gives a time in
  // the past, never a negative field; never() is nullopt.
  std::optional<timespec> absolute(clockid_t clock_id) const noexcept;

 private:
  explicit Deadline(clock::time_point t) noexcept : at_(t) {}
  // Non-positive: already expired; beyond a century: never (no overflow).
  static clock::time_point from_now(double nanoseconds) noexcept;
  clock::time_point at_;
};

// ---------------------------------------------------------------- file descriptors

// Owns one file descriptor. Move-only; -1 is the invalid sentinel. The
// destructor closes without throwing and without retrying on EINTR (on Linux
// the descriptor is released even then: close(2), "Dealing with error returns
// from close()"); call close() to see the error.
class Fd {
 public:
  constexpr Fd() noexcept = default;
  explicit constexpr Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  // Gives up ownership; the caller closes the returned descriptor.
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
  // Closes the current descriptor (ignoring errors) and adopts `fd`.
  void reset(int fd = -1) noexcept;
  // Closes and reports the error, if any. The Fd is invalid afterwards.
  Result<void> close() noexcept;

  // A new close-on-exec descriptor for the same open file (F_DUPFD_CLOEXEC).
  Result<Fd> duplicate() const;
  Result<void> set_nonblocking(bool on) const;
  Result<bool> nonblocking() const;

 private:
  int fd_ = -1;
};

// ---------------------------------------------------------------- pidfd

// A process handle that cannot be confused with a recycled pid
// (pidfd_open(2)): it stays bound to the process it was opened for, which it
// can signal and wait for (readable when the process ends) until the handle
// is closed. Process holds one for each child; this type is for processes
// that are not our children, such as another supervisor.
class Pidfd {
 public:
  Pidfd() noexcept = default;
  explicit Pidfd(Fd fd, pid_t pid) noexcept : fd_(std::move(fd)), pid_(pid) {}

  // ESRCH when no such process exists. A pid <= 0 is refused (EINVAL): it
  // would name a group or every process to kill(2).
  static Result<Pidfd> open(pid_t pid);

  int get() const noexcept { return fd_.get(); }
  pid_t pid() const noexcept { return pid_; }
  bool valid() const noexcept { return fd_.valid(); }
  void reset() noexcept {
    fd_.reset();
    pid_ = 0;
  }
  [[nodiscard]] Fd release() noexcept {
    pid_ = 0;
    return std::move(fd_);
  }
  // pidfd_send_signal(2). ESRCH once the process has ended.
  Result<void> send_signal(int sig) const;
  // True once the process has ended (exited, zombie or reaped).
  bool ended() const;
  // Waits until the process ends: timed_out otherwise.
  Result<void> wait_ended(Deadline deadline, std::string_view what) const;

 private:
  Fd fd_;
  pid_t pid_ = 0;
};

// ---------------------------------------------------------------- I/O and poll

// One read(2): bytes read, 0 at end of stream. EINTR is retried. On a
// non-blocking descriptor with nothing to read, fails with would-block.
Result<std::size_t> read_some(int fd, std::span<std::byte> buf, std::string_view what);

// One write(2) that never raises SIGPIPE: a write with no reader left fails
// with std::errc::broken_pipe instead of killing the process. Uses
// pwritev2(RWF_NOSIGNAL) where the kernel has it (Linux 6.16+), otherwise
// blocks SIGPIPE in the calling thread for the duration of the call and
// discards the signal it caused. EINTR is retried.
Result<std::size_t> write_some(int fd, std::span<const std::byte> data, std::string_view what);

// write_some() until all of `data` is written: for a blocking descriptor
// (a file); a non-blocking one that fills fails with EAGAIN.
Result<void> write_all(int fd, std::span<const std::byte> data, std::string_view what);
inline Result<void> write_all(int fd, std::string_view text, std::string_view what) {
  return write_all(fd, std::as_bytes(std::span(text)), what);
}

// write_some() for several buffers in one system call (writev semantics).
// `rwf_flags` are pwritev2 flags for this call alone: RWF_NOWAIT makes it
// fail with EAGAIN rather than wait, whatever the descriptor's mode (an
// anonymous pipe takes it; a FIFO does not: EOPNOTSUPP).
Result<std::size_t> writev_some(int fd, std::span<const struct iovec> buffers,
                                std::string_view what, int rwf_flags = 0);

// True when write_some() can avoid SIGPIPE without touching the signal mask.
bool kernel_has_write_nosignal() noexcept;

// Opt-in, process-wide: sets SIGPIPE to SIG_IGN (as Rust's runtime does at
// start) so that write_some() can use plain write(2), the cheapest call;
// otherwise it uses pwritev2(RWF_NOSIGNAL), about 50-100 ns dearer per call,
// which shows only with small messages (see docs/benchmarks.md). tether never
// does this by itself. Children spawned by tether still start with SIGPIPE
// at its default. Do not restore a SIGPIPE handler afterwards.
Result<void> ignore_sigpipe();

// Calls `read(span)` (returning Result<size_t>, 0 at end of stream) until
// `buf` is full. Fails with errc::end_of_stream if the stream ended before
// the first byte, errc::truncated ("<what>: got N of M bytes") part way.
template <class Read>
Result<void> read_exactly(std::span<std::byte> buf, std::string_view what, Read&& read) {
  std::size_t done = 0;
  while (done < buf.size()) {
    auto n = read(buf.subspan(done));
    if (!n) return std::unexpected(n.error());
    if (*n == 0) {
      if (done == 0) return fail(errc::end_of_stream, std::string(what));
      return fail(errc::truncated, std::string(what) + ": got " + std::to_string(done) + " of " +
                                       std::to_string(buf.size()) + " bytes");
    }
    done += *n;
  }
  return {};
}

// Every byte until end of stream, from `read(span)` (a reader's read with
// its deadline), `chunk` bytes of room at a time. The first error is
// returned; what was read before it is lost with it.
template <class Read>
Result<std::string> read_to_end(std::size_t chunk, Read&& read) {
  std::string text;
  for (;;) {
    std::size_t old = text.size();
    text.resize(old + chunk);
    auto n = read(std::as_writable_bytes(std::span(text).subspan(old)));
    text.resize(old + (n ? *n : 0));
    if (!n) return std::unexpected(n.error());
    if (*n == 0) return text;
  }
}

// poll(2) with a deadline; EINTR resumes with the time left. Returns the
// number of ready entries, which is 0 only if the deadline expired.
Result<int> poll_fds(std::span<pollfd> fds, Deadline deadline);

// Waits until `fd` has one of `events`. Returns the revents, or timed_out.
Result<short> wait_fd(int fd, short events, Deadline deadline, std::string_view what);

// True for the errors a non-blocking call gives when it would have to wait
// (EAGAIN, which is EWOULDBLOCK on Linux).
inline bool would_block(const Error& e) noexcept {
  return e == std::errc::resource_unavailable_try_again;
}

// Splits a byte stream into lines, for every reader of text lines in tether
// (the supervisor's control FIFO and the worker's output, WorkerInbox).
// A line is at most `max_line` bytes; a longer one comes out as a piece of
// max_line bytes marked `cut`, and the rest of it is either given as further
// cut pieces (Overlong::split, for logs) or dropped up to its newline
// (Overlong::discard, for commands). An incomplete last line stays buffered
// until more bytes come, or is taken with take_partial().
class LineReader {
 public:
  enum class Overlong { split, discard };
  struct Line {
    std::string_view text;  // without its newline; valid until the next call
    bool cut = false;       // part of a line longer than max_line
  };

  explicit LineReader(std::size_t max_line, Overlong overlong = Overlong::split)
      : max_(max_line == 0 ? 1 : max_line), overlong_(overlong) {}

  void feed(std::string_view bytes) { buffer_.append(bytes); }
  // The next complete line (or cut piece), if any.
  std::optional<Line> next();
  // Bytes of an incomplete line held now.
  std::size_t partial_size() const noexcept { return buffer_.size() - start_; }
  // Hands out the incomplete line (at end of stream, say) and forgets it.
  std::string take_partial();
  // Forgets the incomplete line, and any overlong line being discarded.
  void drop_partial() noexcept;

 private:
  std::string buffer_, line_;
  std::size_t start_ = 0, max_;
  Overlong overlong_;
  bool discarding_ = false;
};

// Creates a pipe with both ends close-on-exec: {read end, write end}.
Result<std::pair<Fd, Fd>> make_pipe(bool nonblocking = false);

// Number of descriptors open in this process (entries of /proc/self/fd).
Result<int> count_open_fds();

}  // namespace tether

#include "tether/sys/backoff.hpp"  // IWYU pragma: export
#include "tether/sys/named.hpp"    // IWYU pragma: export
