// Pseudo-terminals: the parent's end.
//
// Everything about the terminal is done here, in the parent, before the
// child exists: posix_openpt, grantpt, unlockpt, ptsname_r, opening the
// slave, termios and window size. The child (spawn.cpp) is left with the
// three steps that must be its own, all plain system calls: setsid(),
// ioctl(TIOCSCTTY) and dup2 onto 0, 1, 2 — what login_tty(3) and Python's
// pty.fork do after fork, minus the open(), which would resolve a path
// between clone and exec.
//
// The slave is opened with TIOCGPTPEER (Linux 4.13, ioctl_tty(2)) rather
// than by its name: the name resolves through whatever /dev/pts is mounted
// in this mount namespace, which in a container need not be the devpts
// instance the master came from (the reason the ioctl was added). The name
// is kept for people (tty(1) prints it) and is the fallback where the ioctl
// is missing (some sandboxes).
//
// The master is non-blocking from the start, and every blocking call polls
// first, so that a deadline is exact and a write can never sleep inside
// write(2): a terminal has no PIPE_BUF promise about how much fits.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>

#include "internal.hpp"

namespace tether {

namespace {

// After the last descriptor of the slave closes, Linux fails read(2) on
// the master with EIO rather than returning 0 (n_tty_read() checks
// TTY_OTHER_CLOSED once the buffer is empty; pty(7) does not say so, but
// every terminal emulator, script(1) and Python's pty.spawn treat EIO as
// the end). Data still buffered is returned first, so this EIO carries no
// loss and means exactly what a pipe's 0 means: we turn it into 0, so that
// loops written for pipes end cleanly here too.
Result<std::size_t> read_master(int fd, std::span<std::byte> buf, std::string_view what) {
  auto n = read_some(fd, buf, what);
  if (!n && n.error() == std::errc::io_error) return 0;
  return n;
}

Result<void> apply_modes(int fd, bool echo, bool raw, std::string_view what) {
  termios t{};
  if (::tcgetattr(fd, &t) != 0) return fail(errno, fmt::format("{}: tcgetattr", what));
  if (raw) {
    ::cfmakeraw(&t);
  } else if (echo) {
    t.c_lflag |= ECHO;
  } else {
    t.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  }
  if (::tcsetattr(fd, TCSANOW, &t) != 0) return fail(errno, fmt::format("{}: tcsetattr", what));
  return {};
}

Result<void> set_size(int fd, WindowSize size, std::string_view what) {
  winsize ws{};
  ws.ws_row = size.rows;
  ws.ws_col = size.cols;
  if (::ioctl(fd, TIOCSWINSZ, &ws) != 0) {
    return fail(errno, fmt::format("{}: set window size to {} x {}", what, size.rows, size.cols));
  }
  return {};
}

}  // namespace

Result<Pty::Pair> Pty::open(PtyOptions options) {
  // O_NOCTTY: were this process a session leader without a terminal, the
  // first terminal it opens would otherwise become its own controlling
  // terminal (open(2), O_NOCTTY). glibc's and musl's
  // posix_openpt pass the flags to open("/dev/ptmx") as they are, so
  // O_CLOEXEC and O_NONBLOCK are set atomically, with no fcntl window.
  Fd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK));
  if (!master.valid()) return fail(errno, "open pseudo-terminal /dev/ptmx");
  // grantpt(3) is a no-op check on devpts (the kernel sets the slave's
  // owner and mode), but POSIX requires it before unlockpt.
  if (::grantpt(master.get()) != 0) return fail(errno, "open pseudo-terminal: grantpt");
  if (::unlockpt(master.get()) != 0) return fail(errno, "open pseudo-terminal: unlockpt");
  char name[128];
  if (int err = ::ptsname_r(master.get(), name, sizeof name); err != 0) {
    return fail(err, "open pseudo-terminal: ptsname_r");
  }
  const std::string what = fmt::format("open pseudo-terminal {}", name);

  // Blocking: this is the child's stdin, stdout and stderr.
  constexpr int slave_flags = O_RDWR | O_NOCTTY | O_CLOEXEC;
  Fd slave(::ioctl(master.get(), TIOCGPTPEER, slave_flags));
  if (!slave.valid()) {
    if (errno != EINVAL && errno != ENOTTY) return fail(errno, what + ": TIOCGPTPEER");
    slave.reset(::open(name, slave_flags));
    if (!slave.valid()) return fail(errno, what + ": open the slave");
  }
  if (options.raw || !options.echo) {
    if (auto r = apply_modes(slave.get(), options.echo, options.raw, what); !r) {
      return std::unexpected(r.error());
    }
  }
  if (options.rows != 0 || options.cols != 0) {
    if (auto r = set_size(slave.get(), {options.rows, options.cols}, what); !r) {
      return std::unexpected(r.error());
    }
  }
  return Pair{Pty(std::move(master), name), std::move(slave)};
}

// ---------------------------------------------------------------- reading

Result<std::size_t> Pty::read(std::span<std::byte> buf, Deadline deadline) const {
  const std::string what = fmt::format("pty {}", name_);
  for (;;) {
    auto n = read_master(fd_.get(), buf, what);
    if (n || !would_block(n.error())) return n;
    // POLLHUP (no slave left) also wakes us; the next read gives EIO, our 0.
    auto ready = wait_fd(fd_.get(), POLLIN, deadline, what + " to become readable");
    if (!ready) return std::unexpected(ready.error());
  }
}

Result<std::size_t> Pty::try_read(std::span<std::byte> buf) const {
  return read_master(fd_.get(), buf, fmt::format("pty {}", name_));
}

Result<void> Pty::read_exact(std::span<std::byte> buf, Deadline deadline) const {
  return read_exactly(buf, fmt::format("read pty {}", name_),
                      [&](std::span<std::byte> rest) { return read(rest, deadline); });
}

Result<std::string> Pty::read_all(Deadline deadline) const {
  return read_to_end(std::size_t{16} * 1024,
                     [&](std::span<std::byte> room) { return read(room, deadline); });
}

Result<void> Pty::read_until(std::string& out, std::string_view text, Deadline deadline) const {
  std::size_t start = out.size();
  for (;;) {
    char c;
    auto n = read(std::as_writable_bytes(std::span(&c, 1)), deadline);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) {
      return fail(errc::end_of_stream, fmt::format("read pty {} until \"{}\" (got {} bytes)", name_,
                                                   text, out.size() - start));
    }
    out += c;
    if (out.size() - start >= text.size() && std::string_view(out).ends_with(text)) return {};
  }
}

// ---------------------------------------------------------------- writing

Result<std::size_t> Pty::write(std::span<const std::byte> data, Deadline deadline) const {
  const std::string what = fmt::format("pty {}", name_);
  for (;;) {
    // Once no slave is open, Linux accepts writes to the master and throws
    // the bytes away, forever. poll(2) tells that state by POLLHUP: report
    // it as the broken pipe it is.
    auto ready = wait_fd(fd_.get(), POLLOUT, deadline, what + " to become writable");
    if (!ready) return std::unexpected(ready.error());
    if ((*ready & POLLHUP) != 0) {
      return fail(EPIPE, fmt::format("write {}: no process has the terminal open", what));
    }
    auto n = write_some(fd_.get(), data, what);
    if (n || !would_block(n.error())) return n;
  }
}

Result<std::size_t> Pty::try_write(std::span<const std::byte> data) const {
  auto n = write(data, Deadline::immediate());
  if (!n && n.error() == std::errc::timed_out)
    return fail(EAGAIN, fmt::format("write pty {}", name_));
  return n;
}

Result<void> Pty::write_all(std::span<const std::byte> data, Deadline deadline) const {
  while (!data.empty()) {
    auto n = write(data, deadline);
    if (!n) return std::unexpected(n.error());
    data = data.subspan(*n);
  }
  return {};
}

Result<void> Pty::send_eof(Deadline deadline) const {
  termios t{};
  if (::tcgetattr(fd_.get(), &t) != 0) {
    return fail(errno, fmt::format("send end of file to pty {}: tcgetattr", name_));
  }
  if ((t.c_lflag & ICANON) == 0 || t.c_cc[VEOF] == _POSIX_VDISABLE) {
    return fail(EINVAL, fmt::format("send end of file to pty {}: the terminal is in raw mode, "
                                    "which has no end-of-file character",
                                    name_));
  }
  char eof = static_cast<char>(t.c_cc[VEOF]);
  return write_all(std::string_view(&eof, 1), deadline);
}

// ---------------------------------------------------------------- settings

Result<WindowSize> Pty::window_size() const {
  winsize ws{};
  if (::ioctl(fd_.get(), TIOCGWINSZ, &ws) != 0) {
    return fail(errno, fmt::format("get window size of pty {}", name_));
  }
  return WindowSize{ws.ws_row, ws.ws_col};
}

Result<void> Pty::set_window_size(WindowSize size) const {
  return set_size(fd_.get(), size, fmt::format("pty {}", name_));
}

Result<void> Pty::set_echo(bool on) const {
  return apply_modes(fd_.get(), on, false,
                     fmt::format("turn echo {} on pty {}", on ? "on" : "off", name_));
}

Result<void> Pty::set_raw() const {
  return apply_modes(fd_.get(), false, true, fmt::format("set pty {} to raw mode", name_));
}

}  // namespace tether
