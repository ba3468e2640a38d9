// The stream framer: whole messages over a byte stream, for every
// byte-stream transport (pipe, FIFO, Unix stream, TCP).
//
// A frame is a 4-byte little-endian length, then the payload, written with
// one vectored system call. A frame longer than the maximum message size
// is refused on both ends; a frame cut short by the peer's end is reported
// as errc::truncated, never delivered. After a framing error the stream is
// broken: every later call fails (no resynchronisation on a guess).
//
// The framer is written once, as a template over the byte stream's system
// calls (PipeIo, SocketIo below): the two differ only in which calls move
// the bytes and in how they wait, and a template keeps each transport's
// calls direct (no second indirect call per system call).
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "net.hpp"
#include "transports.hpp"

namespace tether::detail {

namespace {

constexpr std::size_t kHeader = 4;
constexpr std::size_t kReadChunk = std::size_t{64} * 1024;
// recv_into() with a buffer at least this large reads no further ahead than
// the next header (scatter_first_read).
constexpr std::size_t kReadAheadBelow = 1024;
constexpr decltype(statfs::f_type) kPipefsMagic = 0x50495045;  // linux/magic.h PIPEFS_MAGIC

void put_le32(std::byte* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}
std::uint32_t get_le32(const std::byte* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(p[i]) << (8 * i);
  return v;
}

// Two pipe ends (pipe, FIFO). Either end may be missing: a one-way channel.
// An anonymous pipe's end is left blocking, as a socket is: with no
// deadline a call simply blocks in the kernel (one system call per
// receive, not read + poll + read), and with one it passes RWF_NOWAIT
// (preadv2/pwritev2) and the framer polls. A FIFO takes no RWF_NOWAIT
// (EOPNOTSUPP: it has no FMODE_NOWAIT), so its ends are made non-blocking
// instead, and every call that would wait fails with would-block; an end
// that refuses RWF_NOWAIT at run time is switched to that too.
class PipeIo {
 public:
  struct End {
    Fd fd;
    bool nowait = false;  // blocking descriptor, RWF_NOWAIT per call
  };
  PipeIo(End in, End out) noexcept : in_(std::move(in)), out_(std::move(out)) {}
  static constexpr bool kReadAheadLarge = false;  // see scatter_first_read
  int in_fd() const noexcept { return in_.fd.get(); }
  int out_fd() const noexcept { return out_.fd.get(); }
  bool can_read() const noexcept { return in_.fd.valid(); }
  bool can_write() const noexcept { return out_.fd.valid(); }
  Result<std::size_t> read(std::span<std::byte> buf, bool may_block, const std::string& what) {
    iovec iov{buf.data(), buf.size()};
    return readv({&iov, 1}, may_block, what);
  }
  Result<std::size_t> readv(std::span<iovec> iov, bool may_block, const std::string& what) {
    auto n = call(in_, may_block, [&](int flags) {
      return flags == 0
                 ? ::readv(in_.fd.get(), iov.data(), static_cast<int>(iov.size()))
                 : ::preadv2(in_.fd.get(), iov.data(), static_cast<int>(iov.size()), -1, flags);
    });
    if (n < 0) return fail(errno, "receive on " + what);
    return static_cast<std::size_t>(n);
  }
  // Through writev_some: never SIGPIPE (RWF_NOSIGNAL, or the signal blocked).
  Result<std::size_t> writev(std::span<const iovec> iov, bool may_block, const std::string& what) {
    bool nowait = !may_block && out_.nowait;
    auto n = writev_some(out_.fd.get(), iov, what, nowait ? RWF_NOWAIT : 0);
    if (!n && nowait && n.error() == std::errc::operation_not_supported) {
      if (auto r = out_.fd.set_nonblocking(true); !r) return std::unexpected(r.error());
      out_.nowait = false;
      return writev_some(out_.fd.get(), iov, what);
    }
    return n;
  }
  Result<void> close() noexcept {
    auto a = in_.fd.close();
    auto b = out_.fd.close();
    return a ? b : a;
  }

 private:
  // One system call on `end`: plain when it may block (or the end is
  // non-blocking anyway), with RWF_NOWAIT when it must not.
  template <class Op>
  static ssize_t call(End& end, bool may_block, Op&& op) {
    if (may_block || !end.nowait) return retry_eintr([&] { return op(0); });
    ssize_t n = retry_eintr([&] { return op(RWF_NOWAIT); });
    if (n < 0 && errno == EOPNOTSUPP) {
      if (!end.fd.set_nonblocking(true)) return -1;
      end.nowait = false;
      return retry_eintr([&] { return op(0); });
    }
    return n;
  }

  End in_, out_;
};

// A connected stream socket (Unix stream, TCP): one descriptor both ways,
// left blocking. With no deadline a call simply blocks in the kernel (one
// system call per receive, not read + poll + read); with one, it passes
// MSG_DONTWAIT and the framer polls.
class SocketIo {
 public:
  explicit SocketIo(Fd fd) noexcept : fd_(std::move(fd)) {}
  static constexpr bool kReadAheadLarge = true;  // see scatter_first_read
  int in_fd() const noexcept { return fd_.get(); }
  int out_fd() const noexcept { return fd_.get(); }
  static constexpr bool can_read() noexcept { return true; }
  static constexpr bool can_write() noexcept { return true; }
  Result<std::size_t> read(std::span<std::byte> buf, bool may_block, const std::string& what) {
    int flags = may_block ? 0 : MSG_DONTWAIT;
    ssize_t n = retry_eintr([&] { return ::recv(fd_.get(), buf.data(), buf.size(), flags); });
    if (n < 0) return fail(errno, "receive on " + what);
    return static_cast<std::size_t>(n);
  }
  Result<std::size_t> readv(std::span<iovec> iov, bool may_block, const std::string& what) {
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = iov.size();
    ssize_t n =
        retry_eintr([&] { return ::recvmsg(fd_.get(), &msg, may_block ? 0 : MSG_DONTWAIT); });
    if (n < 0) return fail(errno, "receive on " + what);
    return static_cast<std::size_t>(n);
  }
  Result<std::size_t> writev(std::span<const iovec> iov, bool may_block, const std::string& what) {
    msghdr msg{};
    msg.msg_iov = const_cast<iovec*>(iov.data());
    msg.msg_iovlen = iov.size();
    int flags = MSG_NOSIGNAL | (may_block ? 0 : MSG_DONTWAIT);
    ssize_t n = retry_eintr([&] { return ::sendmsg(fd_.get(), &msg, flags); });
    if (n < 0) return fail(errno, "send on " + what);
    return static_cast<std::size_t>(n);
  }
  Result<void> close() noexcept { return fd_.close(); }

 private:
  Fd fd_;
};

template <class Io>
class StreamFramer final : public Transport {
 public:
  StreamFramer(Io io, std::string what, std::size_t max_message)
      : Transport(std::move(what)), io_(std::move(io)), max_(max_message), rbuf_(kReadChunk) {}

  Result<void> send(std::span<const std::byte> message, Deadline deadline) override;
  Result<void> flush(Deadline deadline) override {
    if (broken_) return std::unexpected(*broken_);
    return flush_pending(deadline);
  }
  Result<std::vector<std::byte>> recv(Deadline deadline) override {
    if (auto ok = check_readable(); !ok) return std::unexpected(ok.error());
    return recv_stream(deadline);
  }
  Result<void> recv_into(std::vector<std::byte>& into, Deadline deadline) override {
    if (auto ok = check_readable(); !ok) return ok;
    // The message is assembled in `into`'s own storage: resizing it to a
    // size it already has neither allocates nor zero-fills.
    if (!in_message_) partial_ = std::move(into);
    auto m = recv_stream(deadline);
    if (!m) return std::unexpected(m.error());
    into = std::move(*m);
    return {};
  }
  int fd() const noexcept override { return io_.in_fd(); }
  Result<void> close() noexcept override { return io_.close(); }

 private:
  Result<void> check_readable() const {
    if (broken_) return std::unexpected(*broken_);
    if (!io_.can_read())
      return fail(EBADF, "receive on " + what_ + ": send-only channel (it has no read end)");
    return {};
  }
  Result<void> flush_pending(Deadline deadline);
  Result<std::size_t> write_frame(std::span<const std::byte> message, std::size_t offset,
                                  bool may_block);
  Result<bool> fill(std::size_t want, Deadline deadline);  // false: end of stream
  Result<std::size_t> read_vectored(std::span<iovec> iov, Deadline deadline);
  Result<bool> scatter_first_read(Deadline deadline);  // false: end of stream
  Result<std::vector<std::byte>> recv_stream(Deadline deadline);
  Result<void> await(int fd, short events, Deadline deadline) const {
    // "wait for a message on X: timed out" — what was awaited, not the
    // transport's name alone (which read "wait for connection on ...").
    return await_event(fd, events, deadline, events & POLLIN ? "a message on " : "room to send on ",
                       what_);
  }
  void mark_broken(const Error& e) {
    broken_ = Error(e.code(), e.context() + " (the channel is now broken)");
  }

  Io io_;
  std::size_t max_;
  // Receive buffer: bytes [rpos_, rend_) are read but not yet delivered.
  std::vector<std::byte> rbuf_;
  std::size_t rpos_ = 0, rend_ = 0;
  // The message being received, kept across a timeout.
  std::vector<std::byte> partial_;
  std::size_t partial_have_ = 0;
  bool in_message_ = false;
  // What a send cut by its deadline could not write yet (the tail of one frame).
  std::vector<std::byte> pending_;
  std::optional<Error> broken_;
};

// ---------------------------------------------------------------- sending

template <class Io>
Result<std::size_t> StreamFramer<Io>::write_frame(std::span<const std::byte> message,
                                                  std::size_t offset, bool may_block) {
  std::byte header[kHeader];
  put_le32(header, static_cast<std::uint32_t>(message.size()));
  iovec iov[2];
  std::size_t count = 0;
  if (offset < kHeader) {
    iov[count++] = {header + offset, kHeader - offset};
    iov[count++] = {const_cast<std::byte*>(message.data()), message.size()};
  } else {
    std::size_t skip = offset - kHeader;
    iov[count++] = {const_cast<std::byte*>(message.data()) + skip, message.size() - skip};
  }
  return io_.writev(std::span<const iovec>(iov, count), may_block, what_);
}

template <class Io>
Result<void> StreamFramer<Io>::flush_pending(Deadline deadline) {
  while (!pending_.empty()) {
    iovec iov{pending_.data(), pending_.size()};
    auto n = io_.writev(std::span<const iovec>(&iov, 1), false, what_);
    if (n) {
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(*n));
      continue;
    }
    if (!would_block(n.error())) {
      mark_broken(n.error());
      return std::unexpected(n.error());
    }
    if (auto r = await(io_.out_fd(), POLLOUT, deadline); !r) return r;
  }
  return {};
}

template <class Io>
Result<void> StreamFramer<Io>::send(std::span<const std::byte> message, Deadline deadline) {
  if (broken_) return std::unexpected(*broken_);
  // A pipe channel made without a write end would otherwise fail with a
  // puzzling EBADF ("write pipe channel").
  if (!io_.can_write())
    return fail(EBADF, "send on " + what_ + ": receive-only channel (it has no write end)");
  if (!pending_.empty()) {
    if (auto f = flush_pending(deadline); !f) return f;
  }
  std::size_t total = message.size() + kHeader;
  std::size_t done = 0;
  while (done < total) {
    auto n = write_frame(message, done, deadline.is_never());
    if (n) {
      done += *n;
      continue;
    }
    if (!would_block(n.error())) {
      if (done > 0) mark_broken(n.error());  // half a frame is in the stream
      return std::unexpected(n.error());
    }
    auto ready = await(io_.out_fd(), POLLOUT, deadline);
    if (!ready) {
      if (done == 0) return ready;  // nothing of it went out: a clean failure
      // Part of the frame is in the stream: keep the rest for the next call
      // rather than leave the stream torn. The message counts as sent.
      std::size_t payload_done = done > kHeader ? done - kHeader : 0;
      std::byte header[kHeader];
      put_le32(header, static_cast<std::uint32_t>(message.size()));
      if (done < kHeader) pending_.assign(header + done, header + kHeader);
      pending_.insert(pending_.end(), message.begin() + static_cast<std::ptrdiff_t>(payload_done),
                      message.end());
      return {};
    }
  }
  return {};
}

// ---------------------------------------------------------------- receiving

template <class Io>
Result<bool> StreamFramer<Io>::fill(std::size_t want, Deadline deadline) {
  while (rend_ - rpos_ < want) {
    if (rbuf_.size() - rpos_ < want) {  // make room at the end
      std::memmove(rbuf_.data(), rbuf_.data() + rpos_, rend_ - rpos_);
      rend_ -= rpos_;
      rpos_ = 0;
    }
    auto n = io_.read(std::span(rbuf_).subspan(rend_), deadline.is_never(), what_);
    if (n) {
      if (*n == 0) return false;
      rend_ += *n;
      continue;
    }
    if (!would_block(n.error())) return std::unexpected(n.error());
    if (auto r = await(io_.in_fd(), POLLIN, deadline); !r) return std::unexpected(r.error());
  }
  return true;
}

template <class Io>
Result<std::size_t> StreamFramer<Io>::read_vectored(std::span<iovec> iov, Deadline deadline) {
  for (;;) {
    auto n = io_.readv(iov, deadline.is_never(), what_);
    if (n || !would_block(n.error())) return n;
    if (auto r = await(io_.in_fd(), POLLIN, deadline); !r) return std::unexpected(r.error());
  }
}

// recv_into() between messages, nothing buffered: one scatter read puts the
// header in its place, the payload straight into the caller's buffer (no
// copy), and whatever follows into ours. Returns false at end of stream.
template <class Io>
Result<bool> StreamFramer<Io>::scatter_first_read(Deadline deadline) {
  std::byte header[kHeader];
  std::size_t cap = partial_.size();
  // After a large message, only the next header: then the next message's
  // payload is read straight into the caller's buffer as well (one read per
  // message and no copy, as a raw loop does), where reading ahead would
  // leave it in ours, to be copied out. Small messages read ahead: many of
  // them per system call.
  // (Pipes only: a socket's receive costs more per call than the copy, and
  // measured no better, bench_channel.)
  std::size_t ahead = Io::kReadAheadLarge || cap < kReadAheadBelow ? rbuf_.size() : kHeader;
  iovec iov[3] = {{header, kHeader}, {partial_.data(), cap}, {rbuf_.data(), ahead}};
  auto n = read_vectored(iov, deadline);
  if (!n) return std::unexpected(n.error());
  if (*n == 0) return false;
  if (*n < kHeader) {  // a header cut by the read: the usual path takes it from here
    std::memcpy(rbuf_.data(), header, *n);
    rpos_ = 0;
    rend_ = *n;
    return true;
  }
  std::uint32_t len = get_le32(header);
  std::size_t body = *n - kHeader;  // payload bytes: first in the caller's buffer, then ours
  std::size_t in_user = std::min(body, cap), in_ours = body - in_user;
  if (len > max_) {
    // Keep the stream's bytes where the usual path reports it from.
    rbuf_.resize(std::max(rbuf_.size(), *n));
    std::memmove(rbuf_.data() + kHeader + in_user, rbuf_.data(), in_ours);
    std::memcpy(rbuf_.data(), header, kHeader);
    std::memcpy(rbuf_.data() + kHeader, partial_.data(), in_user);
    rpos_ = 0;
    rend_ = *n;
    return true;
  }
  if (len <= cap) {
    // Bytes past the message in the caller's buffer belong to the next frames:
    // they go in front of what our buffer got.
    std::size_t have = std::min(in_user, std::size_t{len}), extra = in_user - have;
    if (extra + in_ours > rbuf_.size()) rbuf_.resize(extra + in_ours);
    std::memmove(rbuf_.data() + extra, rbuf_.data(), in_ours);
    std::memcpy(rbuf_.data(), partial_.data() + len, extra);
    rpos_ = 0;
    rend_ = extra + in_ours;
    partial_.resize(len);  // smaller: neither allocates nor fills
    partial_have_ = have;
  } else {
    // Longer than the caller's buffer: grow it and take what ours got.
    partial_.resize(len);
    std::size_t take = std::min(in_ours, len - cap);
    std::memcpy(partial_.data() + cap, rbuf_.data(), take);
    rpos_ = take;
    rend_ = in_ours;
    partial_have_ = in_user + take;
  }
  if (rpos_ == rend_) rpos_ = rend_ = 0;
  in_message_ = true;
  return true;
}

template <class Io>
Result<std::vector<std::byte>> StreamFramer<Io>::recv_stream(Deadline deadline) {
  if (!in_message_ && rpos_ == rend_ && !partial_.empty()) {
    auto got = scatter_first_read(deadline);
    if (!got) return std::unexpected(got.error());
    if (!*got) return fail(errc::end_of_stream, "receive on " + what_);
  }
  // A message in progress (partial_) survives a timeout, so nothing read is lost.
  if (!in_message_) {
    auto got = fill(kHeader, deadline);
    if (!got) return std::unexpected(got.error());
    if (!*got) {
      if (rend_ == rpos_) return fail(errc::end_of_stream, "receive on " + what_);
      Error e(errc::truncated,
              fmt::format("receive on {}: the stream ended inside a frame header", what_));
      mark_broken(e);
      return std::unexpected(e);
    }
    std::uint32_t len = get_le32(rbuf_.data() + rpos_);
    if (len > max_) {
      Error e =
          Error::from_errno(EMSGSIZE, fmt::format("receive on {}: a frame announces {} bytes, more "
                                                  "than the maximum of {} (garbage on the stream, "
                                                  "or a peer with a larger limit)",
                                                  what_, len, max_));
      mark_broken(e);
      return std::unexpected(e);
    }
    rpos_ += kHeader;
    partial_.resize(len);
    partial_have_ = 0;
    in_message_ = true;
  }
  std::size_t len = partial_.size();
  std::size_t take = std::min(len - partial_have_, rend_ - rpos_);
  if (take > 0) std::memcpy(partial_.data() + partial_have_, rbuf_.data() + rpos_, take);
  rpos_ += take;
  partial_have_ += take;
  if (rpos_ == rend_) rpos_ = rend_ = 0;
  // The rest of a large message goes straight into it: no extra copy.
  while (partial_have_ < len) {
    auto n = io_.read(std::span(partial_).subspan(partial_have_), deadline.is_never(), what_);
    if (n) {
      if (*n == 0) {
        Error e(errc::truncated,
                fmt::format("receive on {}: the stream ended after {} of a {}-byte message", what_,
                            partial_have_, len));
        mark_broken(e);
        return std::unexpected(e);
      }
      partial_have_ += *n;
      continue;
    }
    if (!would_block(n.error())) return std::unexpected(n.error());
    if (auto r = await(io_.in_fd(), POLLIN, deadline); !r) return std::unexpected(r.error());
  }
  in_message_ = false;
  return std::exchange(partial_, {});
}

}  // namespace

void tune_socket_buffers(int fd, const ChannelOptions& options) {
  if (options.buffer_size == 0) return;
  int size = static_cast<int>(std::min<std::size_t>(options.buffer_size, 1u << 30));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

Result<std::unique_ptr<Transport>> pipe_transport(Fd in, Fd out, std::string what,
                                                  const ChannelOptions& options) {
  if (!in.valid() && !out.valid())
    return fail(EBADF, "channel over pipes (" + what + "): neither end is open");
  PipeIo::End ends[2] = {{std::move(in)}, {std::move(out)}};
  for (auto& end : ends) {
    Fd* fd = &end.fd;
    if (!fd->valid()) continue;
    // An anonymous pipe (pipefs) stays blocking and takes RWF_NOWAIT; any
    // other (a FIFO) is made non-blocking (see PipeIo).
    struct statfs fs {};
    end.nowait = ::fstatfs(fd->get(), &fs) == 0 && fs.f_type == kPipefsMagic;
    if (auto r = fd->set_nonblocking(!end.nowait); !r) return fail(r.error(), "channel " + what);
    // Bigger pipes are a request, not a requirement: the kernel caps them
    // (/proc/sys/fs/pipe-max-size) and we keep what it grants.
    if (options.buffer_size > 0) {
      int size = static_cast<int>(std::min<std::size_t>(options.buffer_size, 1u << 30));
      (void)::fcntl(fd->get(), F_SETPIPE_SZ, size);
    }
  }
  return std::make_unique<StreamFramer<PipeIo>>(PipeIo(std::move(ends[0]), std::move(ends[1])),
                                                std::move(what), options.max_message);
}

std::unique_ptr<Transport> stream_socket_transport(Fd socket, std::string what,
                                                   const ChannelOptions& options) {
  tune_socket_buffers(socket.get(), options);
  return std::make_unique<StreamFramer<SocketIo>>(SocketIo(std::move(socket)), std::move(what),
                                                  options.max_message);
}

}  // namespace tether::detail
