// UDP sockets: whole datagrams, never cut, never a SIGPIPE.
//
// Every receive passes MSG_TRUNC, with which Linux returns the datagram's
// real length even when the buffer was shorter (recv(2): "For ... Internet
// datagram (since Linux 2.4.27/2.6.8) ... return the real length of the
// packet or datagram, even when it was longer than the passed buffer"), and
// checks msg_flags for MSG_TRUNC as well: a datagram longer than the
// caller's buffer is an error that names both sizes, never a short message
// that looks whole. The datagram is gone by then: UDP cannot deliver the
// rest later, so the error says so.
//
// As for the other sockets, a finite deadline is kept with MSG_DONTWAIT and
// poll(2) on the steady clock; with Deadline::never() one blocking call
// sleeps in the kernel.
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "net.hpp"
#include "tether/channel/socket.hpp"

namespace tether {

namespace {

std::string udp_name(const InetAddress& local, const std::optional<InetAddress>& peer) {
  std::string what = "udp://" + local.describe();
  if (peer) what += " to " + peer->describe();
  return what;
}

Result<InetAddress> local_of(int fd, const std::string& what) {
  sockaddr_storage storage{};
  socklen_t len = sizeof storage;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &len) != 0)
    return fail(errno, "get the address of " + what);
  return InetAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&storage), len);
}

}  // namespace

// ---------------------------------------------------------------- InetAddress

Result<InetAddress> InetAddress::parse(std::string_view host, std::uint16_t port) {
  std::string h(host);
  InetAddress a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage_);
  if (::inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    a.length_ = sizeof(sockaddr_in);
    return a;
  }
  // An IPv6 address, with an optional zone: "fe80::1%eth0".
  std::string zone;
  if (auto percent = h.find('%'); percent != std::string::npos) {
    zone = h.substr(percent + 1);
    h.resize(percent);
  }
  a.storage_ = {};
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage_);
  if (::inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    if (!zone.empty()) {
      unsigned index = ::if_nametoindex(zone.c_str());
      if (index == 0)
        return fail(errno, fmt::format("address '{}': no interface '{}'", host, zone));
      v6->sin6_scope_id = index;
    }
    a.length_ = sizeof(sockaddr_in6);
    return a;
  }
  return fail(EINVAL, fmt::format("address '{}': not a numeric IPv4 or IPv6 address", host));
}

Result<InetAddress> InetAddress::from_sockaddr(const sockaddr* address, socklen_t length) {
  InetAddress a;
  if (address->sa_family == AF_INET && length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    std::memcpy(&a.storage_, address, sizeof(sockaddr_in));
    a.length_ = sizeof(sockaddr_in);
    return a;
  }
  if (address->sa_family == AF_INET6 && length >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    std::memcpy(&a.storage_, address, sizeof(sockaddr_in6));
    a.length_ = sizeof(sockaddr_in6);
    return a;
  }
  return fail(EAFNOSUPPORT,
              fmt::format("socket address of family {} is not IPv4 or IPv6", address->sa_family));
}

std::string InetAddress::host() const {
  char text[INET6_ADDRSTRLEN] = {};
  if (storage_.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, text,
                sizeof text);
  } else if (storage_.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, text,
                sizeof text);
  }
  return text;
}

std::uint16_t InetAddress::port() const noexcept {
  if (storage_.ss_family == AF_INET)
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (storage_.ss_family == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

std::string InetAddress::describe() const {
  return detail::host_port(host(), port());
}

bool operator==(const InetAddress& a, const InetAddress& b) noexcept {
  if (a.storage_.ss_family != b.storage_.ss_family || a.length_ != b.length_) return false;
  if (a.storage_.ss_family == AF_INET) {
    const auto& x = reinterpret_cast<const sockaddr_in&>(a.storage_);
    const auto& y = reinterpret_cast<const sockaddr_in&>(b.storage_);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  if (a.storage_.ss_family == AF_INET6) {
    const auto& x = reinterpret_cast<const sockaddr_in6&>(a.storage_);
    const auto& y = reinterpret_cast<const sockaddr_in6&>(b.storage_);
    return x.sin6_port == y.sin6_port && x.sin6_scope_id == y.sin6_scope_id &&
           std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof x.sin6_addr) == 0;
  }
  return a.length_ == 0;
}

// ---------------------------------------------------------------- UdpSocket

Result<UdpSocket> UdpSocket::bind(std::string_view host, std::uint16_t port) {
  detail::AddrInfo info;
  if (auto r = detail::resolve(host, port, SOCK_DGRAM, true, info); !r)
    return std::unexpected(r.error());
  std::string what = "udp://" + detail::host_port(host, port);
  int last_errno = EADDRNOTAVAIL;
  for (addrinfo* ai = info.list; ai != nullptr; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd.valid() || ::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      last_errno = errno;
      continue;
    }
    UdpSocket s;
    auto local = local_of(fd.get(), what);
    if (!local) return std::unexpected(local.error());
    s.fd_ = std::move(fd);
    s.local_ = *local;
    s.what_ = udp_name(s.local_, s.peer_);
    return s;
  }
  return fail(last_errno, "bind " + what);
}

Result<void> UdpSocket::connect(const InetAddress& peer) {
  if (::connect(fd_.get(), peer.sockaddr_ptr(), peer.sockaddr_length()) != 0)
    return fail(errno, fmt::format("connect {} to {}", what_, peer.describe()));
  // An unbound socket gets its ephemeral port (and source address) now.
  auto local = local_of(fd_.get(), what_);
  if (!local) return std::unexpected(local.error());
  local_ = *local;
  peer_ = peer;
  what_ = udp_name(local_, peer_);
  return {};
}

Result<UdpSocket> udp_connect(std::string_view host, std::uint16_t port) {
  detail::AddrInfo info;
  if (auto r = detail::resolve(host, port, SOCK_DGRAM, false, info); !r)
    return std::unexpected(r.error());
  std::string what = "udp://" + detail::host_port(host, port);
  Error last = Error::from_errno(EADDRNOTAVAIL, "connect to " + what);
  for (addrinfo* ai = info.list; ai != nullptr; ai = ai->ai_next) {
    auto peer = InetAddress::from_sockaddr(ai->ai_addr, ai->ai_addrlen);
    if (!peer) continue;
    UdpSocket s;
    s.fd_.reset(::socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s.fd_.valid()) {
      last = Error::from_errno(errno, "connect to " + what);
      continue;
    }
    s.what_ = what;
    auto c = s.connect(*peer);
    if (!c) {
      last = c.error();
      continue;
    }
    return s;
  }
  return std::unexpected(last);
}

Result<void> UdpSocket::send_impl(std::span<const std::byte> datagram, const InetAddress* to,
                                  Deadline deadline, bool once) const {
  for (;;) {
    int flags = MSG_NOSIGNAL | (once || !deadline.is_never() ? MSG_DONTWAIT : 0);
    ssize_t n = retry_eintr([&] {
      return to != nullptr ? ::sendto(fd_.get(), datagram.data(), datagram.size(), flags,
                                      to->sockaddr_ptr(), to->sockaddr_length())
                           : ::send(fd_.get(), datagram.data(), datagram.size(), flags);
    });
    if (n >= 0) return {};  // UDP sends a datagram whole or not at all
    int err = errno;
    std::string what =
        to != nullptr ? fmt::format("send on {} to {}", what_, to->describe()) : "send on " + what_;
    if (err == EMSGSIZE) {
      return fail(err, fmt::format("{}: a {}-byte datagram is larger than UDP carries ({} bytes "
                                   "over IPv4, {} over IPv6; less where the path MTU is "
                                   "enforced); nothing was sent",
                                   what, datagram.size(), udp_max_payload_v4, udp_max_payload_v6));
    }
    if (err == ECONNREFUSED) {
      return fail(err, what +
                           ": an earlier datagram was refused (ICMP port unreachable: "
                           "nobody is bound there)");
    }
    if (err != EAGAIN) return fail(err, what);
    if (once) return fail(err, what);
    if (auto r = detail::await_event(fd_.get(), POLLOUT, deadline, "room to send on ", what_); !r)
      return r;
  }
}

Result<void> UdpSocket::send(std::span<const std::byte> datagram, Deadline deadline) const {
  return send_impl(datagram, nullptr, deadline, false);
}
Result<void> UdpSocket::try_send(std::span<const std::byte> datagram) const {
  return send_impl(datagram, nullptr, Deadline::immediate(), true);
}
Result<void> UdpSocket::send_to(std::span<const std::byte> datagram, const InetAddress& to,
                                Deadline deadline) const {
  return send_impl(datagram, &to, deadline, false);
}
Result<void> UdpSocket::try_send_to(std::span<const std::byte> datagram,
                                    const InetAddress& to) const {
  return send_impl(datagram, &to, Deadline::immediate(), true);
}

Result<Datagram> UdpSocket::recv_impl(std::span<std::byte> buf, Deadline deadline,
                                      bool once) const {
  for (;;) {
    sockaddr_storage from{};
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    int flags = MSG_TRUNC | (once || !deadline.is_never() ? MSG_DONTWAIT : 0);
    ssize_t n = retry_eintr([&] { return ::recvmsg(fd_.get(), &msg, flags); });
    if (n >= 0) {
      auto size = static_cast<std::size_t>(n);
      auto sender =
          InetAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&from), msg.msg_namelen);
      if (size > buf.size() || (msg.msg_flags & MSG_TRUNC)) {
        return fail(
            EMSGSIZE,
            fmt::format("receive on {}: a {}-byte datagram{} does not fit a {}-byte "
                        "buffer (it was consumed: UDP cannot deliver the rest)",
                        what_, size, sender ? " from " + sender->describe() : "", buf.size()));
      }
      if (!sender) return fail(sender.error(), "receive on " + what_);
      return Datagram{size, *sender};
    }
    int err = errno;
    if (err == ECONNREFUSED) {
      return fail(err, "receive on " + what_ +
                           ": an earlier datagram was refused (ICMP port unreachable: nobody "
                           "is bound there)");
    }
    if (err != EAGAIN || once) return fail(err, "receive on " + what_);
    if (auto r = detail::await_event(fd_.get(), POLLIN, deadline, "a datagram on ", what_); !r)
      return std::unexpected(r.error());
  }
}

Result<std::size_t> UdpSocket::recv(std::span<std::byte> buf, Deadline deadline) const {
  auto d = recv_impl(buf, deadline, false);
  if (!d) return std::unexpected(d.error());
  return d->size;
}
Result<std::size_t> UdpSocket::try_recv(std::span<std::byte> buf) const {
  auto d = recv_impl(buf, Deadline::immediate(), true);
  if (!d) return std::unexpected(d.error());
  return d->size;
}
Result<Datagram> UdpSocket::recv_from(std::span<std::byte> buf, Deadline deadline) const {
  return recv_impl(buf, deadline, false);
}
Result<Datagram> UdpSocket::try_recv_from(std::span<std::byte> buf) const {
  return recv_impl(buf, Deadline::immediate(), true);
}

namespace {

Result<void> set_buffer(int fd, int name, std::size_t bytes, const std::string& what) {
  int value = static_cast<int>(std::min<std::size_t>(bytes, INT32_MAX / 2));
  if (::setsockopt(fd, SOL_SOCKET, name, &value, sizeof value) != 0) return fail(errno, what);
  return {};
}

}  // namespace

Result<void> UdpSocket::set_send_buffer(std::size_t bytes) const {
  return set_buffer(fd_.get(), SO_SNDBUF, bytes, "set send buffer of " + what_);
}
Result<void> UdpSocket::set_recv_buffer(std::size_t bytes) const {
  return set_buffer(fd_.get(), SO_RCVBUF, bytes, "set receive buffer of " + what_);
}

}  // namespace tether
