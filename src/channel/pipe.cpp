#include "tether/channel/pipe.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <climits>

#include <fmt/format.h>

namespace tether {

namespace {

constexpr std::string_view kPipe = "pipe";

}  // namespace

PipeEnd::PipeEnd(Fd fd) noexcept : fd_(std::move(fd)) {
  auto nb = fd_.nonblocking();
  nonblocking_ = nb && *nb;
}

Result<void> PipeEnd::set_nonblocking(bool on) {
  auto r = fd_.set_nonblocking(on);
  if (r) nonblocking_ = on;
  return r;
}

Result<void> PipeEnd::await(short events, Deadline deadline, std::string_view what) const {
  auto ready = wait_fd(fd_.get(), events, deadline, what);
  if (!ready) return std::unexpected(ready.error());
  return {};
}

Result<std::size_t> PipeEnd::capacity() const {
  int size = ::fcntl(fd_.get(), F_GETPIPE_SZ);
  if (size < 0) return fail(errno, fmt::format("get capacity of pipe fd {}", fd_.get()));
  return static_cast<std::size_t>(size);
}

Result<std::size_t> PipeEnd::set_capacity(std::size_t bytes) const {
  // F_SETPIPE_SZ takes an int: refuse what would be truncated.
  if (bytes == 0 || bytes > static_cast<std::size_t>(INT_MAX)) {
    return fail(EINVAL, fmt::format("set capacity of pipe fd {} to {} bytes", fd_.get(), bytes));
  }
  int size = ::fcntl(fd_.get(), F_SETPIPE_SZ, static_cast<int>(bytes));
  if (size < 0) {
    return fail(errno, fmt::format("set capacity of pipe fd {} to {} bytes", fd_.get(), bytes));
  }
  return static_cast<std::size_t>(size);
}

Result<std::size_t> PipeEnd::pending() const {
  int n = 0;
  if (::ioctl(fd_.get(), FIONREAD, &n) != 0) {
    return fail(errno, fmt::format("count bytes in pipe fd {}", fd_.get()));
  }
  return static_cast<std::size_t>(n);
}

// ---------------------------------------------------------------- reader

Result<std::size_t> PipeReader::read(std::span<std::byte> buf) const {
  return read(buf, Deadline::never());
}

Result<std::size_t> PipeReader::read(std::span<std::byte> buf, Deadline deadline) const {
  // A blocking end with a finite deadline must not enter read(2) before
  // data is there; otherwise try first: one syscall in the common case.
  if (!nonblocking_ && !deadline.is_never()) {
    if (auto r = await(POLLIN, deadline, "pipe to become readable"); !r)
      return std::unexpected(r.error());
  }
  for (;;) {
    auto n = read_some(fd_.get(), buf, kPipe);
    if (n || !would_block(n.error())) return n;
    if (auto r = await(POLLIN, deadline, "pipe to become readable"); !r)
      return std::unexpected(r.error());
  }
}

Result<std::size_t> PipeReader::try_read(std::span<std::byte> buf) const {
  if (!nonblocking_) {
    auto ready = wait_fd(fd_.get(), POLLIN, Deadline::immediate(), kPipe);
    if (!ready) {
      if (ready.error() == std::errc::timed_out) return fail(EAGAIN, "read pipe");
      return std::unexpected(ready.error());
    }
  }
  return read_some(fd_.get(), buf, kPipe);
}

Result<void> PipeReader::read_exact(std::span<std::byte> buf, Deadline deadline) const {
  return read_exactly(buf, "read pipe",
                      [&](std::span<std::byte> rest) { return read(rest, deadline); });
}

Result<std::string> PipeReader::read_all(Deadline deadline) const {
  return read_to_end(std::size_t{64} * 1024,
                     [&](std::span<std::byte> room) { return read(room, deadline); });
}

// ---------------------------------------------------------------- writer

Result<std::size_t> PipeWriter::write(std::span<const std::byte> data) const {
  for (;;) {
    auto n = write_some(fd_.get(), data, kPipe);
    if (n || !would_block(n.error())) return n;
    if (auto r = await(POLLOUT, Deadline::never(), "pipe to become writable"); !r) {
      return std::unexpected(r.error());
    }
  }
}

Result<std::size_t> PipeWriter::try_write(std::span<const std::byte> data) const {
  if (nonblocking_) return write_some(fd_.get(), data, kPipe);
  auto ready = wait_fd(fd_.get(), POLLOUT, Deadline::immediate(), kPipe);
  if (!ready) {
    if (ready.error() == std::errc::timed_out) return fail(EAGAIN, "write pipe");
    return std::unexpected(ready.error());
  }
  // POLLOUT on a pipe promises room for PIPE_BUF bytes (one free buffer
  // slot); a larger blocking write could still sleep.
  return write_some(fd_.get(), data.first(std::min(data.size(), pipe_atomic_write)), kPipe);
}

Result<void> PipeWriter::write_all(std::span<const std::byte> data, Deadline deadline) const {
  // A blocking end with no deadline: write(2) itself waits for room.
  bool direct = nonblocking_ || deadline.is_never();
  while (!data.empty()) {
    Result<std::size_t> n = direct ? write_some(fd_.get(), data, kPipe) : try_write(data);
    if (n) {
      data = data.subspan(*n);
      continue;
    }
    if (!would_block(n.error())) return std::unexpected(n.error());
    if (auto r = await(POLLOUT, deadline, "pipe to become writable"); !r) {
      return std::unexpected(r.error());
    }
  }
  return {};
}

// ---------------------------------------------------------------- pairs

Result<Pipe> Pipe::create(bool nonblocking) {
  auto ends = make_pipe(nonblocking);
  if (!ends) return std::unexpected(ends.error());
  Pipe p;
  p.reader = PipeReader(std::move(ends->first), nonblocking);
  p.writer = PipeWriter(std::move(ends->second), nonblocking);
  return p;
}

Result<DuplexPipe> DuplexPipe::create(bool nonblocking) {
  auto a = Pipe::create(nonblocking);
  if (!a) return std::unexpected(a.error());
  auto b = Pipe::create(nonblocking);
  if (!b) return std::unexpected(b.error());
  return DuplexPipe{{std::move(a->reader), std::move(b->writer)},
                    {std::move(b->reader), std::move(a->writer)}};
}

}  // namespace tether
