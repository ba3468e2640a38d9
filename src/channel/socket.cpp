#include "tether/channel/socket.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "net.hpp"
#include "tether/sys/backoff.hpp"

namespace tether {

namespace {

int sock_type(SocketType t) {
  switch (t) {
    case SocketType::stream:
      return SOCK_STREAM;
    case SocketType::seqpacket:
      return SOCK_SEQPACKET;
    case SocketType::datagram:
      return SOCK_DGRAM;
  }
  return SOCK_STREAM;
}

// connect(2) with a deadline: non-blocking connect, then wait for writability.
//
// A Unix stream socket is different: connect(2) never completes in the
// background there. A non-blocking connect to a listener whose backlog is
// full fails with EAGAIN and leaves the socket unconnected (unix(7),
// ERRORS; net/unix/af_unix.c, unix_stream_connect), and so does a blocking
// one interrupted by a signal (EINTR). Such a socket also polls writable, so
// waiting for POLLOUT would report "connected" and the first send would fail
// with ENOTCONN. Linux gives no event for room in another socket's backlog:
// try again with a backoff of 1 to 50 ms until the deadline.
Result<void> connect_with_deadline(int fd, const sockaddr* addr, socklen_t len, Deadline deadline,
                                   const std::string& what) {
  Backoff backoff{std::chrono::milliseconds(1), std::chrono::milliseconds(50)};
  for (;;) {
    if (::connect(fd, addr, len) == 0) return {};
    int err = errno;
    if (addr->sa_family != AF_UNIX) {
      if (err != EINPROGRESS && err != EINTR) return fail(err, "connect to " + what);
      break;  // TCP goes on connecting in the background (connect(2), EINPROGRESS, EINTR)
    }
    if (err == EINTR) continue;
    if (err != EAGAIN) return fail(err, "connect to " + what);
    if (!backoff.wait(deadline)) {
      return fail(ETIMEDOUT, "connect to " + what +
                                 ": the listener's backlog stayed full until the deadline (it "
                                 "is not accepting connections fast enough, or at all)");
    }
  }
  auto ready = wait_fd(fd, POLLOUT, deadline, "connection to " + what);
  if (!ready) return std::unexpected(ready.error());
  int err = 0;
  socklen_t err_len = sizeof err;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
  if (err != 0) return fail(err, "connect to " + what);
  return {};
}

// accept4 on a non-blocking listener, waiting for a connection until the
// deadline. The new socket is blocking and close-on-exec.
Result<Fd> accept_with_deadline(int listener, Deadline deadline, const std::string& what) {
  for (;;) {
    int fd = retry_eintr([&] { return ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC); });
    if (fd >= 0) return Fd(fd);
    if (errno != EAGAIN) return fail(errno, "accept on " + what);
    auto ready = wait_fd(listener, POLLIN, deadline, "a connection on " + what);
    if (!ready) return std::unexpected(ready.error());
  }
}

}  // namespace

// ---------------------------------------------------------------- policy

PeerPolicy PeerPolicy::same_user() noexcept {
  PeerPolicy p;
  p.uids_ = {::geteuid()};
  return p;
}
PeerPolicy PeerPolicy::any() noexcept {
  PeerPolicy p;
  p.any_ = true;
  return p;
}
PeerPolicy PeerPolicy::users(std::vector<uid_t> uids) {
  PeerPolicy p;
  p.uids_ = std::move(uids);
  return p;
}
bool PeerPolicy::allows(const Credentials& peer) const noexcept {
  return any_ || std::find(uids_.begin(), uids_.end(), peer.uid) != uids_.end();
}

// ---------------------------------------------------------------- addresses

Result<UnixAddress> UnixAddress::path(const std::filesystem::path& p) {
  UnixAddress a;
  a.name_ = p.string();
  if (a.name_.empty() || a.name_.size() >= sizeof(sockaddr_un::sun_path)) {
    return fail(ENAMETOOLONG, fmt::format("unix socket path '{}': must be 1 to {} bytes", a.name_,
                                          sizeof(sockaddr_un::sun_path) - 1));
  }
  return a;
}

Result<UnixAddress> UnixAddress::abstract(std::string_view name) {
  UnixAddress a;
  a.name_ = std::string(name);
  a.abstract_ = true;
  if (a.name_.empty() || a.name_.size() >= sizeof(sockaddr_un::sun_path)) {
    return fail(ENAMETOOLONG, fmt::format("abstract unix socket name '{}': must be 1 to {} bytes",
                                          a.name_, sizeof(sockaddr_un::sun_path) - 1));
  }
  return a;
}

std::string UnixAddress::describe() const {
  return (abstract_ ? "unix-abstract:" : "unix:") + name_;
}

std::pair<sockaddr_storage, socklen_t> UnixAddress::to_sockaddr() const noexcept {
  sockaddr_storage storage{};
  auto* un = reinterpret_cast<sockaddr_un*>(&storage);
  un->sun_family = AF_UNIX;
  std::size_t offset = abstract_ ? 1 : 0;  // abstract: a leading NUL, no terminator
  std::memcpy(un->sun_path + offset, name_.data(), name_.size());
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + offset + name_.size() +
                                    (abstract_ ? 0 : 1));
  return {storage, len};
}

// ---------------------------------------------------------------- Socket

Socket::Socket(Fd fd, bool nonblocking, std::string description) noexcept
    : fd_(std::move(fd)), nonblocking_(nonblocking), what_(std::move(description)) {
  int type = 0;
  socklen_t len = sizeof type;
  if (fd_.valid() && ::getsockopt(fd_.get(), SOL_SOCKET, SO_TYPE, &type, &len) == 0) {
    messages_ = type == SOCK_SEQPACKET || type == SOCK_DGRAM;
  }
}

Result<void> Socket::set_nonblocking(bool on) {
  auto r = fd_.set_nonblocking(on);
  if (r) nonblocking_ = on;
  return r;
}

Result<void> Socket::await(short events, Deadline deadline) const {
  return detail::await_event(fd_.get(), events, deadline,
                             events & POLLIN ? "data to receive on " : "room to send on ", what_);
}

namespace {

// One attempt each; MSG_DONTWAIT on every call, so a blocking socket behaves
// the same and a deadline can never be overrun inside the kernel. Would-block
// comes back as EAGAIN.
Result<std::size_t> send_once(int fd, std::span<const std::byte> data, const std::string& what) {
  ssize_t n = retry_eintr(
      [&] { return ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT); });
  if (n < 0) return fail(errno, "send on " + what);
  return static_cast<std::size_t>(n);
}

Result<std::size_t> recv_once(int fd, std::span<std::byte> buf, bool messages,
                              const std::string& what) {
  // On a message socket MSG_TRUNC makes the kernel return the real length,
  // so a message larger than the buffer is reported, never silently cut.
  // (On a TCP socket MSG_TRUNC would mean "discard the data".)
  int flags = MSG_DONTWAIT | (messages ? MSG_TRUNC : 0);
  ssize_t n = retry_eintr([&] { return ::recv(fd, buf.data(), buf.size(), flags); });
  if (n < 0) return fail(errno, "receive on " + what);
  if (static_cast<std::size_t>(n) > buf.size()) {
    return fail(EMSGSIZE,
                fmt::format("receive on {}: a {}-byte message does not fit a {}-byte buffer "
                            "(discarded)",
                            what, n, buf.size()));
  }
  return static_cast<std::size_t>(n);
}

}  // namespace

Result<std::size_t> Socket::send(std::span<const std::byte> data, Deadline deadline) const {
  for (;;) {
    auto n = send_once(fd_.get(), data, what_);
    if (n || !would_block(n.error())) return n;
    if (auto r = await(POLLOUT, deadline); !r) return std::unexpected(r.error());
  }
}

Result<std::size_t> Socket::try_send(std::span<const std::byte> data) const {
  return send_once(fd_.get(), data, what_);
}

Result<void> Socket::send_all(std::span<const std::byte> data, Deadline deadline) const {
  while (!data.empty()) {
    auto n = send(data, deadline);
    if (!n) return std::unexpected(n.error());
    data = data.subspan(*n);
  }
  return {};
}

Result<std::size_t> Socket::recv(std::span<std::byte> buf, Deadline deadline) const {
  for (;;) {
    auto n = recv_once(fd_.get(), buf, messages_, what_);
    if (n || !would_block(n.error())) return n;
    if (auto r = await(POLLIN, deadline); !r) return std::unexpected(r.error());
  }
}

Result<std::size_t> Socket::try_recv(std::span<std::byte> buf) const {
  return recv_once(fd_.get(), buf, messages_, what_);
}

Result<void> Socket::recv_exact(std::span<std::byte> buf, Deadline deadline) const {
  return read_exactly(buf, "receive on " + what_,
                      [&](std::span<std::byte> rest) { return recv(rest, deadline); });
}

Result<void> Socket::shutdown_write() const {
  if (::shutdown(fd_.get(), SHUT_WR) != 0) return fail(errno, "shut down sending on " + what_);
  return {};
}

Result<Credentials> Socket::peer_credentials() const {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd_.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return fail(errno, "get peer credentials of " + what_);
  }
  return Credentials{cred.pid, cred.uid, cred.gid};
}

Result<void> Socket::send_fds(std::span<const std::byte> data, std::span<const int> fds,
                              Deadline deadline) const {
  if (data.empty())
    return fail(EINVAL, "send descriptors on " + what_ + ": at least one data byte is needed");
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  iovec iov{const_cast<std::byte*>(data.data()), data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  for (;;) {
    ssize_t n =
        retry_eintr([&] { return ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT); });
    if (n >= 0) {
      // The descriptors went with the first byte; the rest is plain data.
      if (static_cast<std::size_t>(n) < data.size()) return send_all(data.subspan(n), deadline);
      return {};
    }
    if (errno != EAGAIN) return fail(errno, "send descriptors on " + what_);
    if (auto r = await(POLLOUT, deadline); !r) return std::unexpected(r.error());
  }
}

Result<std::size_t> Socket::recv_fds(std::span<std::byte> buf, std::vector<Fd>& fds,
                                     std::size_t max_fds, Deadline deadline) const {
  std::vector<char> control(CMSG_SPACE(sizeof(int) * max_fds));
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  for (;;) {
    n = retry_eintr([&] { return ::recvmsg(fd_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC); });
    if (n >= 0) break;
    if (errno != EAGAIN) return fail(errno, "receive descriptors on " + what_);
    if (auto r = await(POLLIN, deadline); !r) return std::unexpected(r.error());
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);  // owned now, closed on every path
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    return fail(EMSGSIZE, fmt::format("receive descriptors on {}: more than {} were sent; the rest "
                                      "were closed by the kernel",
                                      what_, max_fds));
  }
  return static_cast<std::size_t>(n);
}

namespace {

Result<void> set_int_option(int fd, int level, int name, int value, const std::string& what) {
  if (::setsockopt(fd, level, name, &value, sizeof value) != 0) return fail(errno, what);
  return {};
}

Result<std::size_t> get_int_option(int fd, int level, int name, const std::string& what) {
  int value = 0;
  socklen_t len = sizeof value;
  if (::getsockopt(fd, level, name, &value, &len) != 0) return fail(errno, what);
  return static_cast<std::size_t>(value);
}

}  // namespace

Result<void> Socket::set_send_buffer(std::size_t bytes) const {
  return set_int_option(fd_.get(), SOL_SOCKET, SO_SNDBUF,
                        static_cast<int>(std::min<std::size_t>(bytes, INT32_MAX / 2)),
                        "set send buffer of " + what_);
}
Result<void> Socket::set_recv_buffer(std::size_t bytes) const {
  return set_int_option(fd_.get(), SOL_SOCKET, SO_RCVBUF,
                        static_cast<int>(std::min<std::size_t>(bytes, INT32_MAX / 2)),
                        "set receive buffer of " + what_);
}
Result<std::size_t> Socket::send_buffer() const {
  return get_int_option(fd_.get(), SOL_SOCKET, SO_SNDBUF, "get send buffer of " + what_);
}
Result<std::size_t> Socket::recv_buffer() const {
  return get_int_option(fd_.get(), SOL_SOCKET, SO_RCVBUF, "get receive buffer of " + what_);
}
Result<void> Socket::set_nodelay(bool on) const {
  return set_int_option(fd_.get(), IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0,
                        "set TCP_NODELAY on " + what_);
}

// ---------------------------------------------------------------- Unix

namespace {

// The mode of a Unix socket's file, exactly as asked whatever the umask.
//
// bind(2) creates the file with the socket inode's mode less the umask
// (net/unix/af_unix.c, unix_bind: `S_IFSOCK | (SOCK_INODE(sock)->i_mode &
// ~current_umask())`). So fchmod(2) on the socket before bind caps the file
// at `mode`: it never exists with a wider one. The umask can still narrow
// it (0660 under umask 022 gives 0640), and neither bind nor any flag
// avoids that short of umask(2), which is process-wide state a library must
// not touch. So once bound, the file is widened to `mode`: it is opened
// with O_PATH | O_NOFOLLOW (a symbolic link is refused, not followed),
// checked to be a socket of our own, and chmod reaches that very inode
// through /proc/self/fd/N, as Fifo::create does, so nothing is re-resolved
// by path. Widening from `mode & ~umask` to `mode` never grants more than
// was asked. Only our own user (or root) could have replaced the file in
// the moment between bind and the open: in a sticky directory such as /tmp
// others can neither rename nor remove our files, and where others may
// write without the sticky bit they can replace a socket file at any time
// anyway. (Binding in a private directory and renaming into place was the
// alternative: it leaves getsockname(2) naming the private path, needs
// renameat2(RENAME_NOREPLACE) and leaves a directory behind on a crash.)
//
// fchmod_before_bind() goes before bind, settle_socket_file() after; the
// latter returns the file's device and inode, by which its owner later
// recognises it.
Result<void> fchmod_before_bind(int fd, mode_t mode, const std::string& what) {
  if (::fchmod(fd, mode & 07777) != 0) return fail(errno, "set mode of " + what);
  return {};
}

Result<struct stat> settle_socket_file(const std::string& path, mode_t mode,
                                       const std::string& what) {
  Fd file(::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!file.valid()) return fail(errno, "set mode of " + what);
  struct stat st {};
  if (::fstat(file.get(), &st) != 0) return fail(errno, "set mode of " + what);
  if (!S_ISSOCK(st.st_mode) || st.st_uid != ::geteuid()) {
    return fail(EEXIST, "set mode of " + what +
                            ": the path no longer holds the socket file we bound; left alone");
  }
  if ((st.st_mode & 07777) != (mode & 07777)) {
    std::string self = fmt::format("/proc/self/fd/{}", file.get());
    if (::chmod(self.c_str(), mode & 07777) != 0) {
      int err = errno;
      (void)::unlink(path.c_str());  // just checked: it is the socket we bound
      return fail(err, "set mode of " + what);
    }
  }
  return st;
}

}  // namespace

Result<UnixListener> UnixListener::listen(const UnixAddress& address, UnixListenOptions options) {
  const std::string what = address.describe();
  if (options.type == SocketType::datagram) {
    return fail(EINVAL,
                "listen on " + what + ": datagram sockets do not listen (use unix_bind_datagram)");
  }
  UnixListener l;
  l.address_ = address;
  // Non-blocking, so that accept with a deadline never sleeps in accept4.
  l.fd_.reset(::socket(AF_UNIX, sock_type(options.type) | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!l.fd_.valid()) return fail(errno, "create socket for " + what);
  // The file is never wider than options.mode (see settle_socket_file).
  if (!address.is_abstract()) {
    if (auto r = fchmod_before_bind(l.fd_.get(), options.mode, what); !r)
      return std::unexpected(r.error());
  }
  auto [addr, len] = address.to_sockaddr();
  if (::bind(l.fd_.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    int err = errno;
    if (err != EADDRINUSE || address.is_abstract()) return fail(err, "bind " + what);
    // Something is at the path. A socket nobody listens on is stale: take its place.
    struct stat st {};
    if (::lstat(address.name().c_str(), &st) != 0) return fail(errno, "bind " + what);
    if (!S_ISSOCK(st.st_mode))
      return fail(EADDRINUSE, "bind " + what + ": the path exists and is not a socket");
    if (st.st_uid != ::geteuid()) {
      return fail(EADDRINUSE,
                  fmt::format("bind {}: the socket file belongs to uid {}", what, st.st_uid));
    }
    Fd probe(::socket(AF_UNIX, sock_type(options.type) | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), len) == 0 ||
        errno != ECONNREFUSED) {
      return fail(EADDRINUSE, "bind " + what + ": another process is listening there");
    }
    if (::unlink(address.name().c_str()) != 0) return fail(errno, "remove stale socket " + what);
    if (::bind(l.fd_.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0)
      return fail(errno, "bind " + what);
  }
  if (!address.is_abstract()) {
    auto st = settle_socket_file(address.name(), options.mode, what);
    if (!st) return std::unexpected(st.error());
    l.file_ = NamedObject::file(address.name(), *st, true);
  }
  if (::listen(l.fd_.get(), options.backlog) != 0) return fail(errno, "listen on " + what);
  l.options_ = std::move(options);
  return l;
}

Result<Socket> UnixListener::accept(Deadline deadline) const {
  const std::string what = address_.describe();
  auto fd = accept_with_deadline(fd_.get(), deadline, what);
  if (!fd) return std::unexpected(fd.error());
  Socket s(std::move(*fd), false, "connection accepted on " + what);
  auto peer = s.peer_credentials();
  if (!peer) return std::unexpected(peer.error());
  if (!options_.policy.allows(*peer)) {
    return fail(EACCES, fmt::format("refuse connection on {} from uid {} (pid {})", what, peer->uid,
                                    peer->pid));
  }
  return s;
}

Result<Socket> unix_connect(const UnixAddress& address, SocketType type, Deadline deadline) {
  const std::string what = address.describe();
  Fd fd(::socket(AF_UNIX,
                 sock_type(type) | SOCK_CLOEXEC | (deadline.is_never() ? 0 : SOCK_NONBLOCK), 0));
  if (!fd.valid()) return fail(errno, "create socket for " + what);
  auto [addr, len] = address.to_sockaddr();
  if (auto r = connect_with_deadline(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len,
                                     deadline, what);
      !r) {
    return std::unexpected(r.error());
  }
  if (!deadline.is_never()) {
    if (auto r = fd.set_nonblocking(false); !r) return std::unexpected(r.error());
  }
  return Socket(std::move(fd), false, what);
}

Result<Socket> unix_bind_datagram(const UnixAddress& address, mode_t mode) {
  const std::string what = address.describe();
  Fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return fail(errno, "create socket for " + what);
  if (!address.is_abstract()) {
    if (auto r = fchmod_before_bind(fd.get(), mode, what); !r) return std::unexpected(r.error());
  }
  auto [addr, len] = address.to_sockaddr();
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0)
    return fail(errno, "bind " + what);
  if (!address.is_abstract()) {
    if (auto st = settle_socket_file(address.name(), mode, what); !st)
      return std::unexpected(st.error());
  }
  return Socket(std::move(fd), false, what);
}

Result<std::pair<Socket, Socket>> socket_pair(SocketType type) {
  int fds[2];
  if (::socketpair(AF_UNIX, sock_type(type) | SOCK_CLOEXEC, 0, fds) != 0)
    return fail(errno, "create socket pair");
  return std::pair<Socket, Socket>{Socket(Fd(fds[0]), false, "socket pair (first end)"),
                                   Socket(Fd(fds[1]), false, "socket pair (second end)")};
}

// ---------------------------------------------------------------- names

namespace {

// getaddrinfo(3) reports its own codes (EAI_*), negative on glibc, which
// are not errnos: mapping them to one (EHOSTUNREACH, as this did first)
// loses what went wrong, a name that does not exist (EAI_NONAME) or a
// resolver that did not answer (EAI_AGAIN). They get a category of their
// own. No equivalence with std::errc is declared: EAI_AGAIN must not
// compare equal to would-block, which callers take as "try again at once".
class ResolverCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "getaddrinfo"; }
  std::string message(int code) const override {
    std::string text = ::gai_strerror(code);
    if (const char* symbol = eai_name(code)) text += fmt::format(" ({})", symbol);
    return text;
  }

 private:
  static const char* eai_name(int code) noexcept {
    switch (code) {
      case EAI_BADFLAGS:
        return "EAI_BADFLAGS";
      case EAI_NONAME:
        return "EAI_NONAME";
      case EAI_AGAIN:
        return "EAI_AGAIN";
      case EAI_FAIL:
        return "EAI_FAIL";
      case EAI_FAMILY:
        return "EAI_FAMILY";
      case EAI_SOCKTYPE:
        return "EAI_SOCKTYPE";
      case EAI_SERVICE:
        return "EAI_SERVICE";
      case EAI_MEMORY:
        return "EAI_MEMORY";
      case EAI_OVERFLOW:
        return "EAI_OVERFLOW";
#ifdef EAI_NODATA
      case EAI_NODATA:
        return "EAI_NODATA";
#endif
#ifdef EAI_ADDRFAMILY
      case EAI_ADDRFAMILY:
        return "EAI_ADDRFAMILY";
#endif
      default:
        return nullptr;
    }
  }
};

}  // namespace

const std::error_category& resolver_category() noexcept {
  static const ResolverCategory category;
  return category;
}

namespace detail {

Result<void> resolve(std::string_view host, std::uint16_t port, int socktype, bool passive,
                     AddrInfo& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  std::string h(host), p = std::to_string(port);
  int rc = ::getaddrinfo(h.empty() ? nullptr : h.c_str(), p.c_str(), &hints, &out.list);
  if (rc == 0) return {};
  std::string what = "resolve " + host_port(host, port);
  if (rc == EAI_SYSTEM) return fail(errno, what);
  return std::unexpected(Error(std::error_code(rc, resolver_category()), what));
}

std::string host_port(std::string_view host, std::uint16_t port) {
  return host.find(':') != std::string_view::npos ? fmt::format("[{}]:{}", host, port)
                                                  : fmt::format("{}:{}", host, port);
}

std::uint16_t bound_port(int fd) {
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) != 0) return 0;
  if (bound.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  if (bound.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return 0;
}

}  // namespace detail

// ---------------------------------------------------------------- TCP

namespace {

std::string tcp_name(std::string_view host, std::uint16_t port) {
  return "tcp://" + detail::host_port(host, port);
}

}  // namespace

Result<TcpListener> TcpListener::listen(std::string_view host, std::uint16_t port, int backlog) {
  // AI_PASSIVE with no host gives the wildcard addresses: every interface.
  detail::AddrInfo info;
  if (auto r = detail::resolve(host, port, SOCK_STREAM, true, info); !r)
    return std::unexpected(r.error());
  std::string what = tcp_name(host, port);
  int last_errno = EADDRNOTAVAIL;
  for (addrinfo* ai = info.list; ai != nullptr; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) {
      last_errno = errno;
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd.get(), backlog) != 0) {
      last_errno = errno;
      continue;
    }
    TcpListener l;
    l.port_ = detail::bound_port(fd.get());
    l.fd_ = std::move(fd);
    l.what_ = tcp_name(host, l.port_);
    return l;
  }
  return fail(last_errno, "listen on " + what);
}

Result<Socket> TcpListener::accept(Deadline deadline) const {
  auto fd = accept_with_deadline(fd_.get(), deadline, what_);
  if (!fd) return std::unexpected(fd.error());
  Socket s(std::move(*fd), false, "connection accepted on " + what_);
  if (auto r = s.set_nodelay(true); !r) return std::unexpected(r.error());
  return s;
}

Result<Socket> tcp_connect(std::string_view host, std::uint16_t port, Deadline deadline) {
  detail::AddrInfo info;
  if (auto r = detail::resolve(host, port, SOCK_STREAM, false, info); !r)
    return std::unexpected(r.error());
  std::string what = tcp_name(host, port);
  Error last = Error::from_errno(EADDRNOTAVAIL, "connect to " + what);
  for (addrinfo* ai = info.list; ai != nullptr; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) {
      last = Error::from_errno(errno, "connect to " + what);
      continue;
    }
    auto c = connect_with_deadline(fd.get(), ai->ai_addr, ai->ai_addrlen, deadline, what);
    if (!c) {
      last = c.error();
      continue;
    }
    Socket s(std::move(fd), true, what);
    if (auto r = s.set_nonblocking(false); !r) return std::unexpected(r.error());
    if (auto r = s.set_nodelay(true); !r) return std::unexpected(r.error());
    return s;
  }
  return std::unexpected(last);
}

}  // namespace tether
