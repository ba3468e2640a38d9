// tether/channel/pipe.hpp — anonymous pipes.
//
//   auto pipe = tether::Pipe::create();          // {reader, writer}
//   pipe->writer.write_all("hello");              // never dies of SIGPIPE
//   std::array<std::byte, 16> buf;
//   auto n = pipe->reader.read(buf);              // 5; 0 means end of stream
//
// Both ends are close-on-exec. A pipe is a byte stream: message boundaries
// are not kept (the Channel layer adds framing). Atomicity: a write of at
// most PIPE_BUF (4096) bytes to a pipe is never interleaved with other
// writers' data, even with many writers (pipe(7)); a larger write may be
// split and interleaved, and write_all() may need several calls.
#pragma once

#include <limits.h>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "tether/sys.hpp"

namespace tether {

// Pipe writes up to this size are atomic (POSIX PIPE_BUF; 4096 on Linux).
inline constexpr std::size_t pipe_atomic_write = PIPE_BUF;

// Operations both ends share.
class PipeEnd {
 public:
  PipeEnd() noexcept = default;
  // Adopts a descriptor (for instance Process::stdout_fd()); reads its mode once.
  explicit PipeEnd(Fd fd) noexcept;
  // Adopts a descriptor whose O_NONBLOCK state the caller knows.
  PipeEnd(Fd fd, bool nonblocking) noexcept : fd_(std::move(fd)), nonblocking_(nonblocking) {}

  bool valid() const noexcept { return fd_.valid(); }
  int fd() const noexcept { return fd_.get(); }  // for poll/epoll
  Fd& handle() noexcept { return fd_; }
  [[nodiscard]] Fd release() noexcept { return std::move(fd_); }
  Result<void> close() noexcept { return fd_.close(); }

  // Non-blocking mode: read/write fail with would-block instead of waiting
  // (the deadline forms below work in either mode).
  Result<void> set_nonblocking(bool on);
  bool nonblocking() const noexcept { return nonblocking_; }
  // Kernel buffer size (F_GETPIPE_SZ / F_SETPIPE_SZ). The kernel rounds up to
  // a power-of-two number of pages; unprivileged users are capped by
  // /proc/sys/fs/pipe-max-size (EPERM above it). Returns the size set.
  Result<std::size_t> capacity() const;
  Result<std::size_t> set_capacity(std::size_t bytes) const;
  // Bytes waiting in the pipe (FIONREAD).
  Result<std::size_t> pending() const;

 protected:
  // Waits for `events` when the call could otherwise block past `deadline`.
  Result<void> await(short events, Deadline deadline, std::string_view what) const;
  Fd fd_;
  bool nonblocking_ = false;
};

class PipeReader : public PipeEnd {
 public:
  using PipeEnd::PipeEnd;
  // Reads what is there (at least 1 byte), blocking until something comes.
  // Returns 0 at end of stream: every writer has closed its end.
  Result<std::size_t> read(std::span<std::byte> buf) const;
  // Same, giving up with timed_out at the deadline.
  Result<std::size_t> read(std::span<std::byte> buf, Deadline deadline) const;
  // Never blocks: fails with would-block (std::errc::resource_unavailable_try_again)
  // when the pipe is empty but writers remain. On a blocking end this costs
  // a poll(2) first; a non-blocking end is one read(2).
  Result<std::size_t> try_read(std::span<std::byte> buf) const;
  // Fills `buf` completely. Fails with errc::end_of_stream if the stream ended
  // before the first byte, errc::truncated if it ended part way.
  Result<void> read_exact(std::span<std::byte> buf, Deadline deadline = Deadline::never()) const;
  // Reads to end of stream.
  Result<std::string> read_all(Deadline deadline = Deadline::never()) const;
};

class PipeWriter : public PipeEnd {
 public:
  using PipeEnd::PipeEnd;
  // Writes some bytes (blocking until at least one fits). A write with no
  // reader left fails with std::errc::broken_pipe; the process gets no SIGPIPE.
  Result<std::size_t> write(std::span<const std::byte> data) const;
  Result<std::size_t> try_write(std::span<const std::byte> data) const;
  // Writes everything, waiting for room as needed until the deadline. On
  // timeout some bytes may have been written (a pipe has no undo).
  Result<void> write_all(std::span<const std::byte> data,
                         Deadline deadline = Deadline::never()) const;
  Result<void> write_all(std::string_view text, Deadline deadline = Deadline::never()) const {
    return write_all(std::as_bytes(std::span(text)), deadline);
  }
};

// pipe2(O_CLOEXEC [| O_NONBLOCK]).
struct Pipe {
  PipeReader reader;
  PipeWriter writer;
  static Result<Pipe> create(bool nonblocking = false);
};

// Two pipes, one each way: a conversation between parent and child. Each
// side keeps one DuplexEnd and gives the other to the peer (for a child
// process: pass its two descriptors, e.g. as its stdin and stdout).
struct DuplexEnd {
  PipeReader in;
  PipeWriter out;
};
struct DuplexPipe {
  DuplexEnd first;
  DuplexEnd second;
  static Result<DuplexPipe> create(bool nonblocking = false);
};

}  // namespace tether
