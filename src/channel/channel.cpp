#include "tether/channel/channel.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <utility>

#include <fmt/format.h>

#include "net.hpp"
#include "transports.hpp"

namespace tether {

namespace {

// The byte a FIFO channel's server sends first (see Channel::connect).
constexpr std::byte kFifoAck{0x06};

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
    sysv,
    shm
  } scheme;
  std::string where;  // path, abstract name, or host
  std::uint16_t port = 0;
};

constexpr std::string_view kForms =
    "unix:/path, unix-seqpacket:/path, unix-abstract:name, tcp://host:port, udp://host:port, "
    "fifo:/path, mq:/name, sysv:KEY or shm:/name";

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
  if (starts("shm:")) return Address{Address::Scheme::shm, std::string(text.substr(4))};
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

// sysv:KEY — a number (decimal or 0x hex: SysvKey::parse, which refuses 0,
// IPC_PRIVATE, and anything wider than 32 bits) or a path for ftok(3).
Result<SysvKey> sysv_key(const std::string& text) {
  auto key = !text.empty() && text[0] == '/' ? SysvKey::from_path(text, 't') : SysvKey::parse(text);
  if (!key) return fail(key.error(), fmt::format("channel address 'sysv:{}'", text));
  return key;
}

Result<UnixAddress> unix_address(const Address& a) {
  return a.scheme == Address::Scheme::unix_abstract ? UnixAddress::abstract(a.where)
                                                    : UnixAddress::path(a.where);
}

}  // namespace

// ---------------------------------------------------------------- construction

Result<Channel> Channel::over(std::unique_ptr<Transport> transport, ChannelOptions options) {
  if (!transport) return fail(EINVAL, "channel over no transport");
  if (options.max_message > 0xffffffffu) {
    return fail(EINVAL, "channel " + transport->description() + ": max_message above 4 GiB");
  }
  Channel c;
  c.transport_ = std::move(transport);
  c.options_ = options;
  return c;
}

namespace {

Result<Channel> pipe_channel(Fd in, Fd out, std::string what, const ChannelOptions& options) {
  auto t = detail::pipe_transport(std::move(in), std::move(out), std::move(what), options);
  if (!t) return std::unexpected(t.error());
  return Channel::over(std::move(*t), options);
}

Result<Channel> queue_channel(PosixQueue in, PosixQueue out, std::string what,
                              const ChannelOptions& options) {
  return Channel::over(
      detail::posix_queue_transport(std::move(in), std::move(out), std::move(what)), options);
}

Result<Channel> sysv_channel(int id, long send_type, long recv_type, std::string what,
                             const ChannelOptions& options) {
  return Channel::over(detail::sysv_transport(id, send_type, recv_type, std::move(what)), options);
}

}  // namespace

Result<Channel> Channel::over_pipes(PipeReader in, PipeWriter out, ChannelOptions options) {
  return pipe_channel(std::move(in.handle()), std::move(out.handle()), "pipe channel", options);
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
  if (type == SOCK_SEQPACKET) {
    return over(detail::seqpacket_transport(std::move(socket.handle()), std::move(what), options),
                options);
  }
  return over(detail::stream_socket_transport(std::move(socket.handle()), std::move(what), options),
              options);
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
  return over(
      detail::datagram_transport(std::move(socket.handle()), std::move(what), options, only_from),
      options);
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

namespace {

Result<Channel> connect_fifo(const std::string& where, Deadline deadline,
                             const ChannelOptions& options) {
  std::string what = "fifo:" + where;
  auto up = Fifo::attach(where + ".c2s");
  if (!up) return fail(up.error(), "connect to " + what);
  auto down = Fifo::attach(where + ".s2c");
  if (!down) return fail(down.error(), "connect to " + what);
  // Writer first: it waits for the server's reader, so when the server
  // sees our reader, our writer already exists (no spurious end of stream).
  auto writer = up->open_writer(deadline);
  if (!writer) return fail(writer.error(), "connect to " + what);
  auto reader = down->open_reader(Deadline::immediate());
  if (!reader) return fail(reader.error(), "connect to " + what);
  // A FIFO read with no writer yet returns end of file; poll does not
  // (it reports a hang-up only once a writer came and went). So wait
  // with poll for the server's handshake byte before the first read.
  if (auto ready = wait_fd(reader->fd(), POLLIN, deadline, "the server of " + what); !ready)
    return fail(ready.error(), "connect to " + what);
  std::byte ack[1];
  if (auto got = reader->read_exact(ack, deadline); !got || ack[0] != kFifoAck) {
    return fail(got ? Error::from_errno(EPROTO, "no handshake") : got.error(),
                "connect to " + what);
  }
  return pipe_channel(std::move(reader->handle()), std::move(writer->handle()), what, options);
}

}  // namespace

Result<Channel> Channel::connect(std::string_view address, Deadline deadline,
                                 ChannelOptions options) {
  auto a = parse_address(address);
  if (!a) return std::unexpected(a.error());
  using S = Address::Scheme;
  switch (a->scheme) {
    case S::fifo:
      return connect_fifo(a->where, deadline, options);
    case S::posix_mq: {
      auto out = PosixQueue::open(a->where + ".c2s");
      if (!out) return fail(out.error(), "connect to mq:" + a->where);
      auto in = PosixQueue::open(a->where + ".s2c");
      if (!in) return fail(in.error(), "connect to mq:" + a->where);
      return queue_channel(std::move(*in), std::move(*out), "mq:" + a->where, options);
    }
    case S::shm:
      return detail::shm_connect(a->where, deadline, options);
    case S::sysv: {
      auto key = sysv_key(a->where);
      if (!key) return std::unexpected(key.error());
      auto q = SysvQueue::open(*key);
      if (!q) return fail(q.error(), "connect to sysv:" + a->where);
      return sysv_channel(q->id(), 1, 2, "sysv:" + a->where, options);
    }
    case S::udp: {
      auto u = udp_connect(a->where, a->port);
      if (!u) return std::unexpected(u.error());
      return over_udp(std::move(*u), std::nullopt, options);
    }
    case S::tcp: {
      auto s = tcp_connect(a->where, a->port, deadline);
      if (!s) return std::unexpected(s.error());
      return over_socket(std::move(*s), options);
    }
    case S::unix_stream:
    case S::unix_seqpacket:
    case S::unix_abstract: {
      auto ua = unix_address(*a);
      if (!ua) return std::unexpected(ua.error());
      auto s = unix_connect(
          *ua, a->scheme == S::unix_seqpacket ? SocketType::seqpacket : SocketType::stream,
          deadline);
      if (!s) return std::unexpected(s.error());
      return over_socket(std::move(*s), options);
    }
  }
  std::unreachable();  // parse_address makes only the schemes above
}

// ---------------------------------------------------------------- messages

const std::string& Channel::description() const noexcept {
  static const std::string none;
  return transport_ ? transport_->description() : none;
}

Result<void> Channel::check_usable() const {
  if (!valid()) return fail(EBADF, "channel " + description() + ": closed");
  return {};
}

Result<void> Channel::send(std::span<const std::byte> message, Deadline deadline) {
  if (auto ok = check_usable(); !ok) return ok;
  if (peer_gone_) return fail(EPIPE, "send on " + description() + ": the peer closed the channel");
  if (message.size() > options_.max_message) {
    return fail(EMSGSIZE,
                fmt::format("send on {}: a {}-byte message exceeds the maximum of {} bytes",
                            description(), message.size(), options_.max_message));
  }
  return transport_->send(message, deadline);
}

Result<void> Channel::try_send(std::span<const std::byte> message) {
  auto r = send(message, Deadline::immediate());
  if (!r && r.error() == std::errc::timed_out) return fail(EAGAIN, "send on " + description());
  return r;
}

Result<void> Channel::flush(Deadline deadline) {
  if (auto ok = check_usable(); !ok) return ok;
  return transport_->flush(deadline);
}

Result<std::vector<std::byte>> Channel::recv(Deadline deadline) {
  if (auto ok = check_usable(); !ok) return std::unexpected(ok.error());
  auto m = transport_->recv(deadline);
  if (!m && m.error() == errc::end_of_stream) peer_gone_ = true;
  return m;
}

Result<void> Channel::recv_into(std::vector<std::byte>& into, Deadline deadline) {
  if (auto ok = check_usable(); !ok) return ok;
  auto r = transport_->recv_into(into, deadline);
  if (!r && r.error() == errc::end_of_stream) peer_gone_ = true;
  return r;
}

Result<std::vector<std::byte>> Channel::try_recv() {
  auto r = recv(Deadline::immediate());
  if (!r && r.error() == std::errc::timed_out) return fail(EAGAIN, "receive on " + description());
  return r;
}

Result<std::string> Channel::recv_string(Deadline deadline) {
  auto m = recv(deadline);
  if (!m) return std::unexpected(m.error());
  return std::string(reinterpret_cast<const char*>(m->data()), m->size());
}

Result<void> Channel::close() noexcept {
  if (!valid()) return {};
  closed_ = true;
  return transport_->close();
}

// ---------------------------------------------------------------- listener

namespace {

// A listening socket: UnixListener or TcpListener.
template <class Listener>
class SocketPort final : public detail::ListenPort {
 public:
  explicit SocketPort(Listener l) noexcept : listener_(std::move(l)) {}
  Result<Channel> accept(Deadline deadline, const ChannelOptions& options) override {
    auto s = listener_.accept(deadline);
    if (!s) return std::unexpected(s.error());
    return Channel::over_socket(std::move(*s), options);
  }
  int fd() const noexcept override { return listener_.fd(); }

 private:
  Listener listener_;
};

// fifo:/path — the two FIFOs /path.c2s and /path.s2c, created (and removed)
// by the listener; one conversation at a time.
class FifoPort final : public detail::ListenPort {
 public:
  FifoPort(Fifo c2s, Fifo s2c, std::string what)
      : c2s_(std::move(c2s)), s2c_(std::move(s2c)), what_(std::move(what)) {}
  Result<Channel> accept(Deadline deadline, const ChannelOptions& options) override {
    // Our reader first (never blocks), then our writer, which waits for
    // the client's reader; the client opened its writer before that.
    auto reader = c2s_.open_reader(Deadline::immediate());
    if (!reader) return fail(reader.error(), "accept on " + what_);
    auto writer = s2c_.open_writer(deadline);
    if (!writer) return fail(writer.error(), "accept on " + what_);
    const std::byte ack[1] = {kFifoAck};  // tells the client our writer is there
    if (auto sent = writer->write_all(ack, deadline); !sent)
      return fail(sent.error(), "accept on " + what_);
    return pipe_channel(std::move(reader->handle()), std::move(writer->handle()), what_, options);
  }
  int fd() const noexcept override { return -1; }

 private:
  Fifo c2s_, s2c_;
  std::string what_;
};

// mq:/name — two POSIX queues, /name.c2s and /name.s2c, owned by the listener.
class MqPort final : public detail::ListenPort {
 public:
  MqPort(PosixQueue c2s, PosixQueue s2c, std::string what)
      : c2s_(std::move(c2s)), s2c_(std::move(s2c)), what_(std::move(what)) {}
  Result<Channel> accept(Deadline, const ChannelOptions& options) override {
    // The channel gets descriptors of its own, which it closes; the
    // names stay the listener's, which removes them.
    auto in = PosixQueue::open(c2s_.name());
    if (!in) return fail(in.error(), "accept on " + what_);
    auto out = PosixQueue::open(s2c_.name());
    if (!out) return fail(out.error(), "accept on " + what_);
    return queue_channel(std::move(*in), std::move(*out), what_, options);
  }
  int fd() const noexcept override { return -1; }

 private:
  PosixQueue c2s_, s2c_;
  std::string what_;
};

// sysv:KEY — one System V queue, owned by the listener: type 1 to the
// server, 2 back.
class SysvPort final : public detail::ListenPort {
 public:
  SysvPort(SysvQueue queue, std::string what) : queue_(std::move(queue)), what_(std::move(what)) {}
  Result<Channel> accept(Deadline, const ChannelOptions& options) override {
    return sysv_channel(queue_.id(), 2, 1, what_, options);
  }
  int fd() const noexcept override { return -1; }

 private:
  SysvQueue queue_;
  std::string what_;
};

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
class UdpPort final : public detail::ListenPort {
 public:
  UdpPort(UdpSocket socket, std::string address)
      : socket_(std::move(socket)), address_(std::move(address)) {}
  Result<Channel> accept(Deadline deadline, const ChannelOptions& options) override;
  int fd() const noexcept override { return socket_.fd(); }

 private:
  UdpSocket socket_;  // until accept() gives it to the first peer's channel
  std::string address_;
  std::string peer_;  // whom the socket went to
};

Result<Channel> UdpPort::accept(Deadline deadline, const ChannelOptions& options) {
  if (!socket_.valid()) {
    return fail(EISCONN, fmt::format("accept on {}: this listener's socket already carries the "
                                     "channel with {}; UDP has no connections, so a UDP listener "
                                     "serves one peer (listen on another port for another)",
                                     address_, peer_));
  }
  sockaddr_storage from{};
  for (;;) {
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    ssize_t n = retry_eintr(
        [&] { return ::recvmsg(socket_.fd(), &msg, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT); });
    if (n >= 0) {
      auto sender =
          InetAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&from), msg.msg_namelen);
      if (!sender) return fail(sender.error(), "accept on " + address_);
      if (auto c = socket_.connect(*sender); !c) return fail(c.error(), "accept on " + address_);
      peer_ = sender->describe();
      return Channel::over_udp(std::move(socket_), *sender, options);
    }
    if (errno != EAGAIN) return fail(errno, "accept on " + address_);
    if (auto ready = wait_fd(socket_.fd(), POLLIN, deadline, "a first datagram on " + address_);
        !ready) {
      return std::unexpected(ready.error());
    }
  }
}

}  // namespace

ChannelListener::ChannelListener() noexcept = default;
ChannelListener::ChannelListener(ChannelListener&&) noexcept = default;
ChannelListener& ChannelListener::operator=(ChannelListener&&) noexcept = default;
ChannelListener::~ChannelListener() = default;

Result<ChannelListener> ChannelListener::listen(std::string_view address, ChannelOptions options,
                                                PeerPolicy policy) {
  auto a = parse_address(address);
  if (!a) return std::unexpected(a.error());
  using S = Address::Scheme;
  ChannelListener l;
  l.options_ = options;
  l.address_ = std::string(address);
  auto listening = [&](std::string_view what) { return fmt::format("listen on {}", what); };
  switch (a->scheme) {
    case S::tcp: {
      // An empty host ("tcp://:PORT") is the wildcard: every interface.
      auto t = TcpListener::listen(a->where, a->port);
      if (!t) return std::unexpected(t.error());
      l.address_ = "tcp://" + detail::host_port(a->where, t->port());
      l.port_ = std::make_unique<SocketPort<TcpListener>>(std::move(*t));
      return l;
    }
    case S::udp: {
      auto u = UdpSocket::bind(a->where, a->port);
      if (!u) return fail(u.error(), listening(address));
      l.address_ = "udp://" + detail::host_port(a->where, u->local_address().port());
      l.port_ = std::make_unique<UdpPort>(std::move(*u), l.address_);
      return l;
    }
    case S::fifo: {
      auto c2s = Fifo::create(a->where + ".c2s");
      if (!c2s) return fail(c2s.error(), listening(address));
      auto s2c = Fifo::create(a->where + ".s2c");
      if (!s2c) return fail(s2c.error(), listening(address));
      l.port_ = std::make_unique<FifoPort>(std::move(*c2s), std::move(*s2c), "fifo:" + a->where);
      return l;
    }
    case S::shm: {
      auto port = detail::shm_listen(a->where, options);
      if (!port) return fail(port.error(), listening(address));
      l.port_ = std::move(*port);
      return l;
    }
    case S::posix_mq: {
      PosixQueueOptions qo;
      qo.message_size = static_cast<long>(std::min<std::size_t>(options.max_message, 8192));
      auto c2s = PosixQueue::create(a->where + ".c2s", qo);
      if (!c2s) return fail(c2s.error(), listening(address));
      auto s2c = PosixQueue::create(a->where + ".s2c", qo);
      if (!s2c) return fail(s2c.error(), listening(address));
      l.port_ = std::make_unique<MqPort>(std::move(*c2s), std::move(*s2c), "mq:" + a->where);
      return l;
    }
    case S::sysv: {
      auto key = sysv_key(a->where);
      if (!key) return std::unexpected(key.error());
      auto q = SysvQueue::create(*key);
      if (!q) return fail(q.error(), listening(address));
      l.port_ = std::make_unique<SysvPort>(std::move(*q), "sysv:" + a->where);
      return l;
    }
    case S::unix_stream:
    case S::unix_seqpacket:
    case S::unix_abstract: {
      auto ua = unix_address(*a);
      if (!ua) return std::unexpected(ua.error());
      UnixListenOptions uo;
      uo.policy = std::move(policy);
      uo.type = a->scheme == S::unix_seqpacket ? SocketType::seqpacket : SocketType::stream;
      auto u = UnixListener::listen(*ua, uo);
      if (!u) return std::unexpected(u.error());
      l.port_ = std::make_unique<SocketPort<UnixListener>>(std::move(*u));
      return l;
    }
  }
  std::unreachable();  // parse_address makes only the schemes above
}

Result<Channel> ChannelListener::accept(Deadline deadline) const {
  if (!port_) return fail(EBADF, "accept on " + address_ + ": the listener is closed");
  return port_->accept(deadline, options_);
}

int ChannelListener::fd() const noexcept {
  return port_ ? port_->fd() : -1;
}

}  // namespace tether
