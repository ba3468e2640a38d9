#include "tether/channel/channel.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "net.hpp"

namespace tether {

namespace {

constexpr std::size_t kHeader = 4;
constexpr std::size_t kReadChunk = 64 * 1024;
// The byte a FIFO channel's server sends first (see Channel::connect).
constexpr std::byte kFifoAck{0x06};

void put_le32(std::byte* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}
std::uint32_t get_le32(const std::byte* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(p[i]) << (8 * i);
  return v;
}

// A parsed channel address.
struct Address {
  enum class Scheme {
    unix_stream,
    unix_seqpacket,
    unix_abstract,
    tcp,
    udp,
    fifo,
    posix_mq,
    sysv
  } scheme;
  std::string where;  // path, abstract name, or host
  std::uint16_t port = 0;
};

constexpr std::string_view kForms =
    "unix:/path, unix-seqpacket:/path, unix-abstract:name, tcp://host:port, udp://host:port, "
    "fifo:/path, mq:/name or sysv:KEY";

Result<Address> parse_address(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return fail(EINVAL, fmt::format("channel address '{}': {} (expected {})", text, why, kForms));
  };
  auto starts = [&](std::string_view p) { return text.substr(0, p.size()) == p; };
  if (starts("unix-seqpacket:"))
    return Address{Address::Scheme::unix_seqpacket, std::string(text.substr(15))};
  if (starts("unix-abstract:"))
    return Address{Address::Scheme::unix_abstract, std::string(text.substr(14))};
  if (starts("unix:")) return Address{Address::Scheme::unix_stream, std::string(text.substr(5))};
  if (starts("fifo:")) return Address{Address::Scheme::fifo, std::string(text.substr(5))};
  if (starts("mq:")) return Address{Address::Scheme::posix_mq, std::string(text.substr(3))};
  if (starts("sysv:")) return Address{Address::Scheme::sysv, std::string(text.substr(5))};
  if (starts("tcp://") || starts("udp://")) {
    auto scheme = starts("tcp://") ? Address::Scheme::tcp : Address::Scheme::udp;
    std::string_view rest = text.substr(6);
    std::string_view host, port;
    if (rest.starts_with('[')) {  // [v6]:port
      auto close = rest.find(']');
      if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
        return bad("an IPv6 host goes in brackets: tcp://[::1]:port, udp://[::1]:port");
      }
      host = rest.substr(1, close - 1);
      port = rest.substr(close + 2);
    } else {
      auto colon = rest.rfind(':');
      if (colon == std::string_view::npos) return bad("no port");
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
    }
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value > 65535)
      return bad("bad port");
    return Address{scheme, std::string(host), static_cast<std::uint16_t>(value)};
  }
  return bad("unknown scheme");
}

// sysv:KEY — a number (decimal or 0x hex) or a path for ftok(3).
//
// A key is 32 bits (key_t is an int; ipcs(1) shows it as unsigned hex), so
// 1 to 0xffffffff are keys, the upper half as the negative key_t values that
// ftok(3) also makes. 0 is IPC_PRIVATE, which is no key at all: msgget(2)
// makes a new queue for every caller, so the listener and each client would
// get a queue of their own (a client's of mode 0, which nobody removes).
// Anything wider than 32 bits used to be cut to its low bits — 4294967296
// became 0 — so it is refused rather than wrapped, and so is a sign.
Result<key_t> sysv_key(const std::string& text) {
  if (!text.empty() && text[0] == '/') return SysvQueue::key_from_path(text, 't');
  auto bad = [&](std::string_view why) {
    return fail(EINVAL, fmt::format("channel address 'sysv:{}': {}", text, why));
  };
  std::uint64_t value = 0;
  bool hex = text.starts_with("0x") || text.starts_with("0X");
  std::string_view digits = std::string_view(text).substr(hex ? 2 : 0);
  if (text.starts_with('-') || text.starts_with('+')) return bad("a key has no sign");
  auto [end, ec] =
      std::from_chars(digits.data(), digits.data() + digits.size(), value, hex ? 16 : 10);
  if (digits.empty() || end != digits.data() + digits.size() ||
      (ec != std::errc() && ec != std::errc::result_out_of_range)) {
    return bad("the key must be a number (12, 0x1f) or a path");
  }
  if (ec == std::errc::result_out_of_range || value > 0xffffffffu)
    return bad("the key does not fit 32 bits (at most 4294967295, 0xffffffff)");
  if (value == 0) {
    return bad(
        "key 0 is IPC_PRIVATE, which names no queue: each side would get a new queue "
        "of its own (use a key from 1 to 0xffffffff, or a path)");
  }
  return static_cast<key_t>(static_cast<std::uint32_t>(value));
}

Result<UnixAddress> unix_address(const Address& a) {
  return a.scheme == Address::Scheme::unix_abstract ? UnixAddress::abstract(a.where)
                                                    : UnixAddress::path(a.where);
}

}  // namespace

// ---------------------------------------------------------------- construction

Result<Channel> Channel::make(Fd in, Fd out, Kind kind, bool socket, std::string what,
                              ChannelOptions options) {
  Channel c;
  // One socket carries both directions. A pipe channel without a write end
  // is receive-only: its in_ is a read end, and sending there would only
  // fail with a puzzling EBADF ("write pipe channel").
  c.same_fd_ = socket && !out.valid();
  c.in_ = std::move(in);
  c.out_ = std::move(out);
  c.kind_ = kind;
  c.socket_ = socket;
  c.options_ = options;
  c.what_ = std::move(what);
  if (options.max_message > 0xffffffffu)
    return fail(EINVAL, "channel " + c.what_ + ": max_message above 4 GiB");
  // Pipes are made non-blocking and every wait is a poll with the caller's
  // deadline. Sockets and POSIX queues stay blocking: each call passes MSG_DONTWAIT when a
  // deadline must be kept, and with no deadline simply blocks in the kernel
  // (one system call per receive, not read + poll + read).
  if (!socket && kind != Kind::posix_mq) {
    for (Fd* fd : {&c.in_, &c.out_}) {
      if (fd->valid()) {
        if (auto r = fd->set_nonblocking(true); !r) return fail(r.error(), "channel " + c.what_);
      }
    }
  }
  // Bigger kernel buffers are a request, not a requirement: the kernel caps
  // them (pipe-max-size, wmem_max) and we keep what it grants.
  if (options.buffer_size > 0 &&
      (kind == Kind::stream || kind == Kind::packet || kind == Kind::datagram)) {
    int size = static_cast<int>(std::min<std::size_t>(options.buffer_size, 1u << 30));
    if (socket) {
      ::setsockopt(c.in_.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
      ::setsockopt(c.in_.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    } else {
      for (Fd* fd : {&c.in_, &c.out_}) {
        if (fd->valid()) (void)::fcntl(fd->get(), F_SETPIPE_SZ, size);
      }
    }
  }
  if (kind == Kind::stream) c.rbuf_.resize(kReadChunk);
  return c;
}

Result<Channel> Channel::over_pipes(PipeReader in, PipeWriter out, ChannelOptions options) {
  return make(std::move(in.handle()), std::move(out.handle()), Kind::stream, false, "pipe channel",
              options);
}

Result<Channel> Channel::over_socket(Socket socket, ChannelOptions options) {
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(socket.fd(), SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    return fail(errno, "channel over " + socket.description());
  }
  if (type == SOCK_DGRAM) {
    return fail(EINVAL,
                "channel over " + socket.description() + ": datagram sockets are not reliable");
  }
  std::string what = socket.description();
  return make(std::move(socket.handle()), Fd(),
              type == SOCK_SEQPACKET ? Kind::packet : Kind::stream, true, std::move(what), options);
}

Result<Channel> Channel::over_queues(PosixQueue in, PosixQueue out, std::string what,
                                     ChannelOptions options) {
  auto c = make(Fd(), Fd(), Kind::posix_mq, false, std::move(what), options);
  if (!c) return c;
  c->mq_in_ = std::move(in);
  c->mq_out_ = std::move(out);
  return c;
}

Result<Channel> Channel::over_udp(UdpSocket socket, std::optional<InetAddress> only_from,
                                  ChannelOptions options) {
  if (!socket.peer()) {
    return fail(EDESTADDRREQ, "channel over " + socket.description() +
                                  ": the socket has no peer (UdpSocket::connect it first)");
  }
  // No message larger than UDP carries: the limit says what will work.
  options.max_message =
      std::min(options.max_message,
               socket.local_address().is_v6() ? udp_max_payload_v6 : udp_max_payload_v4);
  std::string what = socket.description();
  auto c = make(std::move(socket.handle()), Fd(), Kind::datagram, true, std::move(what), options);
  if (c) c->udp_peer_ = std::move(only_from);
  return c;
}

Result<std::pair<Channel, Channel>> Channel::pipe_pair(ChannelOptions options) {
  auto d = DuplexPipe::create();
  if (!d) return std::unexpected(d.error());
  auto a = over_pipes(std::move(d->first.in), std::move(d->first.out), options);
  if (!a) return std::unexpected(a.error());
  auto b = over_pipes(std::move(d->second.in), std::move(d->second.out), options);
  if (!b) return std::unexpected(b.error());
  return std::pair<Channel, Channel>{std::move(*a), std::move(*b)};
}

Result<std::pair<Channel, Channel>> Channel::socket_pair(SocketType type, ChannelOptions options) {
  auto p = tether::socket_pair(type);
  if (!p) return std::unexpected(p.error());
  auto a = over_socket(std::move(p->first), options);
  if (!a) return std::unexpected(a.error());
  auto b = over_socket(std::move(p->second), options);
  if (!b) return std::unexpected(b.error());
  return std::pair<Channel, Channel>{std::move(*a), std::move(*b)};
}

Result<Channel> Channel::connect(std::string_view address, Deadline deadline,
                                 ChannelOptions options) {
  auto a = parse_address(address);
  if (!a) return std::unexpected(a.error());
  switch (a->scheme) {
    case Address::Scheme::fifo: {
      auto up = Fifo::attach(a->where + ".c2s");
      if (!up) return fail(up.error(), "connect to fifo:" + a->where);
      auto down = Fifo::attach(a->where + ".s2c");
      if (!down) return fail(down.error(), "connect to fifo:" + a->where);
      // Writer first: it waits for the server's reader, so when the server
      // sees our reader, our writer already exists (no spurious end of stream).
      auto writer = up->open_writer(deadline);
      if (!writer) return fail(writer.error(), "connect to fifo:" + a->where);
      auto reader = down->open_reader(Deadline::immediate());
      if (!reader) return fail(reader.error(), "connect to fifo:" + a->where);
      // A FIFO read with no writer yet returns end of file; poll does not
      // (it reports a hang-up only once a writer came and went). So wait
      // with poll for the server's handshake byte before the first read.
      if (auto ready = wait_fd(reader->fd(), POLLIN, deadline, "the server of fifo:" + a->where);
          !ready) {
        return fail(ready.error(), "connect to fifo:" + a->where);
      }
      std::byte ack[1];
      if (auto got = reader->read_exact(ack, deadline); !got || ack[0] != kFifoAck) {
        return fail(got ? Error::from_errno(EPROTO, "no handshake") : got.error(),
                    "connect to fifo:" + a->where);
      }
      auto c = over_pipes(std::move(*reader), std::move(*writer), options);
      if (c) c->what_ = "fifo:" + a->where;
      return c;
    }
    case Address::Scheme::posix_mq: {
      auto out = PosixQueue::open(a->where + ".c2s");
      if (!out) return fail(out.error(), "connect to mq:" + a->where);
      auto in = PosixQueue::open(a->where + ".s2c");
      if (!in) return fail(in.error(), "connect to mq:" + a->where);
      return over_queues(std::move(*in), std::move(*out), "mq:" + a->where, options);
    }
    case Address::Scheme::sysv: {
      auto key = sysv_key(a->where);
      if (!key) return std::unexpected(key.error());
      auto q = SysvQueue::open(*key);
      if (!q) return fail(q.error(), "connect to sysv:" + a->where);
      auto c = make(Fd(), Fd(), Kind::sysv, false, "sysv:" + a->where, options);
      if (c) {
        c->sysv_id_ = q->id();
        c->send_type_ = 1;
        c->recv_type_ = 2;
      }
      return c;
    }
    case Address::Scheme::udp: {
      auto u = udp_connect(a->where, a->port);
      if (!u) return std::unexpected(u.error());
      return over_udp(std::move(*u), std::nullopt, options);
    }
    default:
      break;
  }
  Result<Socket> s = fail(EINVAL, "unreachable");
  if (a->scheme == Address::Scheme::tcp) {
    s = tcp_connect(a->where, a->port, deadline);
  } else {
    auto ua = unix_address(*a);
    if (!ua) return std::unexpected(ua.error());
    s = unix_connect(
        *ua,
        a->scheme == Address::Scheme::unix_seqpacket ? SocketType::seqpacket : SocketType::stream,
        deadline);
  }
  if (!s) return std::unexpected(s.error());
  return over_socket(std::move(*s), options);
}

Result<void> Channel::close() noexcept {
  sysv_id_ = -1;  // the queue belongs to the listener; we only stop using it
  auto a = in_.close();
  auto b = out_.close();
  auto c = mq_in_.close();  // ours are opened, not owned: closing unlinks nothing
  auto d = mq_out_.close();
  for (auto* r : {&a, &b, &c, &d}) {
    if (!*r) return std::move(*r);
  }
  return {};
}

// ---------------------------------------------------------------- helpers

Result<void> Channel::check_usable() const {
  if (broken_) return std::unexpected(*broken_);
  if (!valid()) return fail(EBADF, "channel " + what_ + ": closed");
  return {};
}

void Channel::mark_broken(const Error& e) {
  broken_ = Error(e.code(), e.context() + " (the channel is now broken)");
}

Result<void> Channel::await(int fd, short events, Deadline deadline) const {
  // "wait for a message on X: timed out" — what was awaited, not the
  // transport's name alone (which read "wait for connection on ...").
  return detail::await_event(fd, events, deadline,
                             events & POLLIN ? "a message on " : "room to send on ", what_);
}

// ---------------------------------------------------------------- sending

Result<std::size_t> Channel::write_frame(std::span<const std::byte> message, std::size_t offset,
                                         bool may_block) {
  int fd = same_fd_ ? in_.get() : out_.get();
  std::byte header[kHeader];
  put_le32(header, static_cast<std::uint32_t>(message.size()));
  iovec iov[2];
  int count = 0;
  if (kind_ == Kind::stream && offset < kHeader) {
    iov[count++] = {header + offset, kHeader - offset};
    iov[count++] = {const_cast<std::byte*>(message.data()), message.size()};
  } else {
    std::size_t skip = kind_ == Kind::stream ? offset - kHeader : offset;
    iov[count++] = {const_cast<std::byte*>(message.data()) + skip, message.size() - skip};
  }
  if (socket_) {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<std::size_t>(count);
    int flags = MSG_NOSIGNAL | (may_block ? 0 : MSG_DONTWAIT);
    ssize_t n = retry_eintr([&] { return ::sendmsg(fd, &msg, flags); });
    if (n < 0) return fail(errno, "send on " + what_);
    return static_cast<std::size_t>(n);
  }
  return writev_some(fd, std::span<const iovec>(iov, static_cast<std::size_t>(count)), what_);
}

Result<void> Channel::flush(Deadline deadline) {
  if (auto ok = check_usable(); !ok) return ok;
  int fd = same_fd_ ? in_.get() : out_.get();
  while (!pending_.empty()) {
    iovec iov{pending_.data(), pending_.size()};
    Result<std::size_t> n = socket_ ? [&]() -> Result<std::size_t> {
      ssize_t r = retry_eintr(
          [&] { return ::send(fd, iov.iov_base, iov.iov_len, MSG_NOSIGNAL | MSG_DONTWAIT); });
      if (r < 0) return fail(errno, "send on " + what_);
      return static_cast<std::size_t>(r);
    }()
        : writev_some(fd, std::span<const iovec>(&iov, 1), what_);
    if (n) {
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(*n));
      continue;
    }
    if (!would_block(n.error())) {
      mark_broken(n.error());
      return std::unexpected(n.error());
    }
    if (auto r = await(fd, POLLOUT, deadline); !r) return r;
  }
  return {};
}

Result<void> Channel::send(std::span<const std::byte> message, Deadline deadline) {
  if (auto ok = check_usable(); !ok) return ok;
  if (kind_ != Kind::sysv && kind_ != Kind::posix_mq && !out_.valid() && !same_fd_)
    return fail(EBADF, "send on " + what_ + ": receive-only channel (it has no write end)");
  if (peer_gone_) return fail(EPIPE, "send on " + what_ + ": the peer closed the channel");
  if (message.size() > options_.max_message) {
    return fail(EMSGSIZE,
                fmt::format("send on {}: a {}-byte message exceeds the maximum of {} bytes", what_,
                            message.size(), options_.max_message));
  }
  if (kind_ == Kind::posix_mq || kind_ == Kind::sysv) return send_queue(message, deadline);
  if (kind_ == Kind::datagram) return send_datagram(message, deadline);
  if (kind_ == Kind::packet && message.empty()) {
    return fail(EINVAL, "send on " + what_ +
                            ": an empty message cannot be told from the end of a "
                            "seqpacket stream");
  }
  if (auto f = flush(deadline); !f) return f;
  int fd = same_fd_ ? in_.get() : out_.get();
  std::size_t total = message.size() + (kind_ == Kind::stream ? kHeader : 0);
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
    auto ready = await(fd, POLLOUT, deadline);
    if (!ready) {
      if (done == 0) return ready;  // nothing of it went out: a clean failure
      // Part of the frame is in the stream: keep the rest for the next call
      // rather than leave the stream torn. The message counts as sent.
      std::size_t payload_done = done > kHeader || kind_ == Kind::packet
                                     ? done - (kind_ == Kind::stream ? kHeader : 0)
                                     : 0;
      std::byte header[kHeader];
      put_le32(header, static_cast<std::uint32_t>(message.size()));
      if (kind_ == Kind::stream && done < kHeader) pending_.assign(header + done, header + kHeader);
      pending_.insert(pending_.end(), message.begin() + static_cast<std::ptrdiff_t>(payload_done),
                      message.end());
      return {};
    }
  }
  return {};
}

Result<void> Channel::try_send(std::span<const std::byte> message) {
  if (!pending_.empty()) {
    if (auto f = flush(Deadline::immediate()); !f) {
      if (f.error() == std::errc::timed_out) return fail(EAGAIN, "send on " + what_);
      return f;
    }
  }
  auto r = send(message, Deadline::immediate());
  if (!r && r.error() == std::errc::timed_out) return fail(EAGAIN, "send on " + what_);
  return r;
}

// ---------------------------------------------------------------- receiving

Result<std::size_t> Channel::read_in(std::span<std::byte> buf, Deadline deadline) {
  if (!socket_) return read_some(in_.get(), buf, what_);
  int flags = deadline.is_never() ? 0 : MSG_DONTWAIT;
  ssize_t n = retry_eintr([&] { return ::recv(in_.get(), buf.data(), buf.size(), flags); });
  if (n < 0) return fail(errno, "receive on " + what_);
  return static_cast<std::size_t>(n);
}

Result<bool> Channel::fill(std::size_t want, Deadline deadline) {
  while (rend_ - rpos_ < want) {
    if (rbuf_.size() - rpos_ < want) {  // make room at the end
      std::memmove(rbuf_.data(), rbuf_.data() + rpos_, rend_ - rpos_);
      rend_ -= rpos_;
      rpos_ = 0;
    }
    auto n = read_in(std::span(rbuf_).subspan(rend_), deadline);
    if (n) {
      if (*n == 0) return false;
      rend_ += *n;
      continue;
    }
    if (!would_block(n.error())) return std::unexpected(n.error());
    if (auto r = await(in_.get(), POLLIN, deadline); !r) return std::unexpected(r.error());
  }
  return true;
}

Result<std::size_t> Channel::read_vectored(std::span<iovec> iov, Deadline deadline) {
  for (;;) {
    ssize_t n;
    if (socket_) {
      msghdr msg{};
      msg.msg_iov = iov.data();
      msg.msg_iovlen = iov.size();
      n = retry_eintr(
          [&] { return ::recvmsg(in_.get(), &msg, deadline.is_never() ? 0 : MSG_DONTWAIT); });
    } else {
      n = retry_eintr([&] { return ::readv(in_.get(), iov.data(), static_cast<int>(iov.size())); });
    }
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EAGAIN) return fail(errno, "receive on " + what_);
    if (auto r = await(in_.get(), POLLIN, deadline); !r) return std::unexpected(r.error());
  }
}

// recv_into() between messages, nothing buffered: one scatter read puts the
// header in its place, the payload straight into the caller's buffer (no
// copy), and whatever follows into ours. Returns false at end of stream.
Result<bool> Channel::scatter_first_read(Deadline deadline) {
  std::byte header[kHeader];
  std::size_t cap = partial_.size();
  iovec iov[3] = {{header, kHeader}, {partial_.data(), cap}, {rbuf_.data(), rbuf_.size()}};
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
  if (len > options_.max_message) {
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

Result<std::vector<std::byte>> Channel::recv_stream(Deadline deadline) {
  if (!in_message_ && rpos_ == rend_ && !partial_.empty()) {
    auto got = scatter_first_read(deadline);
    if (!got) return std::unexpected(got.error());
    if (!*got) {
      peer_gone_ = true;
      return fail(errc::end_of_stream, "receive on " + what_);
    }
  }
  // A message in progress (partial_) survives a timeout, so nothing read is lost.
  if (!in_message_) {
    auto got = fill(kHeader, deadline);
    if (!got) return std::unexpected(got.error());
    if (!*got) {
      if (rend_ == rpos_) {
        peer_gone_ = true;
        return fail(errc::end_of_stream, "receive on " + what_);
      }
      Error e(errc::truncated,
              fmt::format("receive on {}: the stream ended inside a frame header", what_));
      mark_broken(e);
      return std::unexpected(e);
    }
    std::uint32_t len = get_le32(rbuf_.data() + rpos_);
    if (len > options_.max_message) {
      Error e =
          Error::from_errno(EMSGSIZE, fmt::format("receive on {}: a frame announces {} bytes, more "
                                                  "than the maximum of {} (garbage on the stream, "
                                                  "or a peer with a larger limit)",
                                                  what_, len, options_.max_message));
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
    auto n = read_in(std::span(partial_).subspan(partial_have_), deadline);
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
    if (auto r = await(in_.get(), POLLIN, deadline); !r) return std::unexpected(r.error());
  }
  in_message_ = false;
  return std::exchange(partial_, {});
}

namespace {

// The largest packet a Unix seqpacket peer can send: the kernel refuses
// one longer than the sender's send buffer (unix_dgram_sendmsg: EMSGSIZE
// above sk_sndbuf - 32), and SO_SNDBUF grants at most twice
// net.core.wmem_max. (SO_SNDBUFFORCE, root only, can go beyond: such a
// packet is detected and reported, never delivered cut short.)
std::size_t largest_seqpacket() {
  static const std::size_t largest = [] {
    std::size_t wmem_max = 0;
    if (std::FILE* f = std::fopen("/proc/sys/net/core/wmem_max", "re")) {
      unsigned long v = 0;
      if (std::fscanf(f, "%lu", &v) == 1) wmem_max = v;
      std::fclose(f);
    }
    return wmem_max > 0 ? 2 * wmem_max : std::size_t{4} << 20;
  }();
  return largest;
}

}  // namespace

Result<std::vector<std::byte>> Channel::recv_packet(Deadline deadline) {
  // One recv per message, into a buffer large enough for any packet the
  // peer can send (or one byte more than the maximum we accept): MSG_TRUNC
  // makes recv return the packet's real length, so an oversized packet is
  // seen, and discarded whole, boundaries intact. The buffer is allocated
  // once and uninitialised, so only the pages messages touch are ever used.
  if (!pbuf_) {
    pbuf_size_ = std::min(options_.max_message, largest_seqpacket()) + 1;
    pbuf_ = std::make_unique_for_overwrite<std::byte[]>(pbuf_size_);
  }
  for (;;) {
    ssize_t size = retry_eintr([&] {
      return ::recv(in_.get(), pbuf_.get(), pbuf_size_,
                    MSG_TRUNC | (deadline.is_never() ? 0 : MSG_DONTWAIT));
    });
    if (size < 0) {
      if (errno != EAGAIN) return fail(errno, "receive on " + what_);
      if (auto r = await(in_.get(), POLLIN, deadline); !r) return std::unexpected(r.error());
      continue;
    }
    if (size == 0) {  // empty messages are refused on send: this is the end
      peer_gone_ = true;
      return fail(errc::end_of_stream, "receive on " + what_);
    }
    auto n = static_cast<std::size_t>(size);
    if (n > options_.max_message) {
      return fail(EMSGSIZE,
                  fmt::format("receive on {}: a {}-byte message exceeds the maximum of {} "
                              "bytes (discarded)",
                              what_, n, options_.max_message));
    }
    if (n >= pbuf_size_) {
      return fail(EMSGSIZE,
                  fmt::format("receive on {}: a {}-byte message exceeds the largest packet "
                              "expected ({} bytes, twice net.core.wmem_max) (discarded)",
                              what_, n, pbuf_size_ - 1));
    }
    return std::vector<std::byte>(pbuf_.get(), pbuf_.get() + n);
  }
}

// UDP: one message is one datagram, sent whole or not at all, received
// whole or reported. An empty datagram is an empty message (UDP has no end
// of stream to confuse it with).
Result<void> Channel::send_datagram(std::span<const std::byte> message, Deadline deadline) {
  for (;;) {
    int flags = MSG_NOSIGNAL | (deadline.is_never() ? 0 : MSG_DONTWAIT);
    ssize_t n =
        retry_eintr([&] { return ::send(in_.get(), message.data(), message.size(), flags); });
    if (n >= 0) return {};
    if (errno != EAGAIN) return fail(errno, "send on " + what_);
    if (auto r = await(in_.get(), POLLOUT, deadline); !r) return r;
  }
}

Result<std::vector<std::byte>> Channel::recv_datagram(Deadline deadline) {
  // max_message is at most the largest UDP payload (see over_udp), so the
  // buffer is at most 64 KiB, and one byte more than we accept: MSG_TRUNC
  // makes recvmsg return the real length of a larger one (recv(2)), which
  // is then reported, never delivered cut.
  if (!pbuf_) {
    pbuf_size_ = options_.max_message + 1;
    pbuf_ = std::make_unique_for_overwrite<std::byte[]>(pbuf_size_);
  }
  for (;;) {
    sockaddr_storage from{};
    iovec iov{pbuf_.get(), pbuf_size_};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    ssize_t size = retry_eintr([&] {
      return ::recvmsg(in_.get(), &msg, MSG_TRUNC | (deadline.is_never() ? 0 : MSG_DONTWAIT));
    });
    if (size < 0) {
      if (errno != EAGAIN) return fail(errno, "receive on " + what_);
      if (auto r = await(in_.get(), POLLIN, deadline); !r) return std::unexpected(r.error());
      continue;
    }
    if (udp_peer_) {
      // An accepted channel's socket was the listener's, unconnected until
      // the first datagram came: datagrams from others queued before
      // connect(2) are still in its queue. They are not this conversation's.
      auto sender =
          InetAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&from), msg.msg_namelen);
      if (!sender || !(*sender == *udp_peer_)) continue;
    }
    auto n = static_cast<std::size_t>(size);
    if (n > options_.max_message) {
      return fail(EMSGSIZE,
                  fmt::format("receive on {}: a {}-byte datagram exceeds the maximum of {} "
                              "bytes (it was consumed: discarded)",
                              what_, n, options_.max_message));
    }
    return std::vector<std::byte>(pbuf_.get(), pbuf_.get() + n);
  }
}

// POSIX queues are PosixQueue's, with its blocking policy (one system call
// per message with no deadline; see kExpired in message_queue.cpp).
Result<void> Channel::send_queue(std::span<const std::byte> message, Deadline deadline) {
  if (kind_ == Kind::sysv) return SysvQueue::from_id(sysv_id_).send(send_type_, message, deadline);
  return mq_out_.send(message, 0, deadline);
}

Result<std::vector<std::byte>> Channel::recv_queue(Deadline deadline) {
  if (kind_ == Kind::sysv) {
    auto m = SysvQueue::from_id(sysv_id_).recv(recv_type_, deadline);
    if (!m) return std::unexpected(m.error());
    return std::move(m->data);
  }
  // One buffer of the queue's message size, kept: nothing is allocated or
  // zero-filled per message but the message itself.
  if (qbuf_.size() != mq_in_.message_size()) qbuf_.resize(mq_in_.message_size());
  auto n = mq_in_.recv_into(qbuf_, deadline);
  if (!n) return std::unexpected(n.error());
  return std::vector<std::byte>(qbuf_.data(), qbuf_.data() + *n);
}

Result<std::vector<std::byte>> Channel::recv(Deadline deadline) {
  if (auto ok = check_usable(); !ok) return std::unexpected(ok.error());
  if (kind_ == Kind::posix_mq || kind_ == Kind::sysv) return recv_queue(deadline);
  if (!in_.valid())
    return fail(EBADF, "receive on " + what_ + ": send-only channel (it has no read end)");
  if (kind_ == Kind::datagram) return recv_datagram(deadline);
  return kind_ == Kind::stream ? recv_stream(deadline) : recv_packet(deadline);
}

Result<void> Channel::recv_into(std::vector<std::byte>& into, Deadline deadline) {
  if (auto ok = check_usable(); !ok) return ok;
  if (kind_ == Kind::stream && in_.valid()) {
    // The message is assembled in `into`'s own storage: resizing it to a
    // size it already has neither allocates nor zero-fills.
    if (!in_message_) partial_ = std::move(into);
    auto m = recv_stream(deadline);
    if (!m) return std::unexpected(m.error());
    into = std::move(*m);
    return {};
  }
  auto m = recv(deadline);
  if (!m) return std::unexpected(m.error());
  into = std::move(*m);
  return {};
}

Result<std::vector<std::byte>> Channel::try_recv() {
  auto r = recv(Deadline::immediate());
  if (!r && r.error() == std::errc::timed_out) return fail(EAGAIN, "receive on " + what_);
  return r;
}

Result<std::string> Channel::recv_string(Deadline deadline) {
  auto m = recv(deadline);
  if (!m) return std::unexpected(m.error());
  return std::string(reinterpret_cast<const char*>(m->data()), m->size());
}

// ---------------------------------------------------------------- listener

Result<ChannelListener> ChannelListener::listen(std::string_view address, ChannelOptions options,
                                                PeerPolicy policy) {
  auto a = parse_address(address);
  if (!a) return std::unexpected(a.error());
  ChannelListener l;
  l.options_ = options;
  if (a->scheme == Address::Scheme::tcp) {
    // An empty host ("tcp://:PORT") is the wildcard: every interface.
    auto t = TcpListener::listen(a->where, a->port);
    if (!t) return std::unexpected(t.error());
    l.address_ = "tcp://" + detail::host_port(a->where, t->port());
    l.listener_ = std::move(*t);
    return l;
  }
  if (a->scheme == Address::Scheme::udp) {
    auto u = UdpSocket::bind(a->where, a->port);
    if (!u) return fail(u.error(), fmt::format("listen on {}", address));
    l.address_ = "udp://" + detail::host_port(a->where, u->local_address().port());
    UdpPort port;
    port.socket = std::move(*u);
    l.listener_ = std::move(port);
    return l;
  }
  if (a->scheme == Address::Scheme::fifo || a->scheme == Address::Scheme::posix_mq ||
      a->scheme == Address::Scheme::sysv) {
    Rendezvous r;
    r.scheme = std::string(address.substr(0, address.find(':')));
    r.name = a->where;
    if (a->scheme == Address::Scheme::fifo) {
      for (const char* suffix : {".c2s", ".s2c"}) {
        auto f = Fifo::create(a->where + suffix);
        if (!f) return fail(f.error(), fmt::format("listen on {}", address));
        r.fifos.push_back(std::move(*f));
      }
    } else if (a->scheme == Address::Scheme::posix_mq) {
      PosixQueueOptions qo;
      qo.message_size = static_cast<long>(std::min<std::size_t>(options.max_message, 8192));
      for (const char* suffix : {".c2s", ".s2c"}) {
        auto q = PosixQueue::create(a->where + suffix, qo);
        if (!q) return fail(q.error(), fmt::format("listen on {}", address));
        r.queues.push_back(std::move(*q));
      }
    } else {
      auto key = sysv_key(a->where);
      if (!key) return std::unexpected(key.error());
      auto q = SysvQueue::create(*key);
      if (!q) return fail(q.error(), fmt::format("listen on {}", address));
      r.sysv = std::move(*q);
    }
    l.address_ = std::string(address);
    l.listener_ = std::move(r);
    return l;
  }
  auto ua = unix_address(*a);
  if (!ua) return std::unexpected(ua.error());
  UnixListenOptions uo;
  uo.policy = std::move(policy);
  l.packet_ = a->scheme == Address::Scheme::unix_seqpacket;
  uo.type = l.packet_ ? SocketType::seqpacket : SocketType::stream;
  auto u = UnixListener::listen(*ua, uo);
  if (!u) return std::unexpected(u.error());
  l.address_ = std::string(address);
  l.listener_ = std::move(*u);
  return l;
}

Result<Channel> ChannelListener::accept(Deadline deadline) const {
  if (const auto* u = std::get_if<UdpPort>(&listener_))
    return u->accept(address_, options_, deadline);
  if (const auto* r = std::get_if<Rendezvous>(&listener_)) {
    std::string what = r->scheme + ":" + r->name;
    if (!r->fifos.empty()) {
      // Our reader first (never blocks), then our writer, which waits for
      // the client's reader; the client opened its writer before that.
      auto reader = r->fifos[0].open_reader(Deadline::immediate());
      if (!reader) return fail(reader.error(), "accept on " + what);
      auto writer = r->fifos[1].open_writer(deadline);
      if (!writer) return fail(writer.error(), "accept on " + what);
      const std::byte ack[1] = {kFifoAck};  // tells the client our writer is there
      if (auto sent = writer->write_all(ack, deadline); !sent)
        return fail(sent.error(), "accept on " + what);
      auto c = Channel::over_pipes(std::move(*reader), std::move(*writer), options_);
      if (c) c->what_ = what;
      return c;
    }
    if (!r->queues.empty()) {
      // The channel gets descriptors of its own, which it closes; the
      // names stay the listener's, which unlinks them.
      auto in = PosixQueue::open(r->queues[0].name());
      if (!in) return fail(in.error(), "accept on " + what);
      auto out = PosixQueue::open(r->queues[1].name());
      if (!out) return fail(out.error(), "accept on " + what);
      return Channel::over_queues(std::move(*in), std::move(*out), what, options_);
    }
    auto c = Channel::make(Fd(), Fd(), Channel::Kind::sysv, false, what, options_);
    if (c) {
      c->sysv_id_ = r->sysv->id();
      c->send_type_ = 2;
      c->recv_type_ = 1;
    }
    return c;
  }
  Result<Socket> s = std::visit(
      [&](const auto& l) -> Result<Socket> {
        using L = std::decay_t<decltype(l)>;
        if constexpr (std::is_same_v<L, Rendezvous> || std::is_same_v<L, UdpPort>) {
          return fail(EINVAL, "unreachable");
        } else {
          return l.accept(deadline);
        }
      },
      listener_);
  if (!s) return std::unexpected(s.error());
  return Channel::over_socket(std::move(*s), options_);
}

int ChannelListener::fd() const noexcept {
  return std::visit(
      [](const auto& l) {
        using L = std::decay_t<decltype(l)>;
        if constexpr (std::is_same_v<L, Rendezvous>) {
          return -1;
        } else if constexpr (std::is_same_v<L, UdpPort>) {
          return l.socket.fd();
        } else {
          return l.fd();
        }
      },
      listener_);
}

}  // namespace tether

namespace tether {

// UDP has no connections, so there is nothing to accept: the first datagram
// is what tells a listener that a peer exists. accept() waits for it, learns
// its sender with MSG_PEEK (the datagram stays queued, to be the channel's
// first message), connects the listener's own socket to that sender, and
// hands the socket over. From then on the kernel delivers only that peer's
// datagrams to it (udp(7): "only receive datagrams from the peer"), and
// the channel drops any datagram from others queued before connect(2).
//
// A second socket bound to the same port for the next peer would need
// SO_REUSEADDR or SO_REUSEPORT, and then which socket gets a datagram is
// the kernel's choice among connected and unconnected sockets of a
// reuseport group, which has changed between kernel versions; and the
// datagrams a peer sends between the first one and the connect would land
// on the wrong socket. One peer per listener is what can be promised
// without either, so a second accept() is refused (EISCONN).
Result<Channel> ChannelListener::UdpPort::accept(const std::string& address,
                                                 const ChannelOptions& options,
                                                 Deadline deadline) const {
  if (!socket.valid()) {
    return fail(EISCONN, fmt::format("accept on {}: this listener's socket already carries the "
                                     "channel with {}; UDP has no connections, so a UDP listener "
                                     "serves one peer (listen on another port for another)",
                                     address, peer));
  }
  sockaddr_storage from{};
  for (;;) {
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    ssize_t n = retry_eintr(
        [&] { return ::recvmsg(socket.fd(), &msg, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT); });
    if (n >= 0) {
      auto sender =
          InetAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&from), msg.msg_namelen);
      if (!sender) return fail(sender.error(), "accept on " + address);
      if (auto c = socket.connect(*sender); !c) return fail(c.error(), "accept on " + address);
      peer = sender->describe();
      return Channel::over_udp(std::move(socket), *sender, options);
    }
    if (errno != EAGAIN) return fail(errno, "accept on " + address);
    if (auto ready = wait_fd(socket.fd(), POLLIN, deadline, "a first datagram on " + address);
        !ready) {
      return std::unexpected(ready.error());
    }
  }
}

}  // namespace tether
