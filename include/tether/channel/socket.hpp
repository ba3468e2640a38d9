// tether/channel/socket.hpp — Unix-domain, TCP and UDP sockets.
//
//   auto server = tether::UnixListener::listen(tether::UnixAddress::path("/run/app.sock"));
//   auto client = tether::unix_connect(tether::UnixAddress::path("/run/app.sock"));
//   auto conn = server->accept(5s);               // refuses other users by default
//   client->send_all(bytes);                      // never dies of SIGPIPE
//
//   auto udp = tether::UdpSocket::bind("127.0.0.1", 0);   // an ephemeral port
//   auto peer = tether::udp_connect("127.0.0.1", udp->local_address().port());
//   peer->send("one datagram");
//   auto got = udp->recv_from(buf, 1s);          // size and sender; never truncated
//
// Every socket is close-on-exec; sends use MSG_NOSIGNAL, so a peer that went
// away is `broken_pipe` (or `connection_reset`), never a SIGPIPE death.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tether/sys.hpp"
#include "tether/sys/named.hpp"

namespace tether {

enum class SocketType {
  stream,     // SOCK_STREAM: a byte stream
  seqpacket,  // SOCK_SEQPACKET: connected, reliable, message boundaries kept
  datagram,   // SOCK_DGRAM: messages, boundaries kept
};

// The peer of a Unix socket, from SO_PEERCRED (as it was at connect time).
struct Credentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// Who may connect to a listener; checked on every accept.
class PeerPolicy {
 public:
  static PeerPolicy same_user() noexcept;  // the default: our effective uid only
  static PeerPolicy any() noexcept;
  static PeerPolicy users(std::vector<uid_t> uids);  // these uids (and not ours unless listed)
  bool allows(const Credentials& peer) const noexcept;

 private:
  bool any_ = false;
  std::vector<uid_t> uids_;
};

// A Unix socket address: a filesystem path, or a name in Linux's abstract
// namespace (no file; anyone in the network namespace can connect, so the
// peer policy is what protects it).
class UnixAddress {
 public:
  static Result<UnixAddress> path(const std::filesystem::path& p);
  static Result<UnixAddress> abstract(std::string_view name);
  bool is_abstract() const noexcept { return abstract_; }
  const std::string& name() const noexcept { return name_; }
  // "unix:/run/app.sock" or "unix-abstract:app".
  std::string describe() const;

  // For the system calls.
  std::pair<sockaddr_storage, socklen_t> to_sockaddr() const noexcept;

 private:
  std::string name_;
  bool abstract_ = false;
};

// A connected socket (or a bound datagram socket). Move-only.
class Socket {
 public:
  Socket() noexcept = default;
  // Adopts a socket; asks the kernel its type once (SO_TYPE).
  Socket(Fd fd, bool nonblocking, std::string description) noexcept;

  bool valid() const noexcept { return fd_.valid(); }
  int fd() const noexcept { return fd_.get(); }
  Fd& handle() noexcept { return fd_; }
  [[nodiscard]] Fd release() noexcept { return std::move(fd_); }
  Result<void> close() noexcept { return fd_.close(); }
  const std::string& description() const noexcept { return what_; }

  Result<void> set_nonblocking(bool on);
  bool nonblocking() const noexcept { return nonblocking_; }

  // Sends some bytes (a whole message on seqpacket/datagram), waiting for
  // room until the deadline.
  Result<std::size_t> send(std::span<const std::byte> data,
                           Deadline deadline = Deadline::never()) const;
  Result<std::size_t> try_send(std::span<const std::byte> data) const;
  // Sends everything (stream sockets), waiting for room until the deadline.
  Result<void> send_all(std::span<const std::byte> data,
                        Deadline deadline = Deadline::never()) const;
  Result<void> send_all(std::string_view text, Deadline deadline = Deadline::never()) const {
    return send_all(std::as_bytes(std::span(text)), deadline);
  }

  // Receives what is there. On a stream, 0 means end of stream. On
  // seqpacket/datagram, one whole message; a message larger than `buf`
  // fails with EMSGSIZE and is discarded, never silently truncated.
  Result<std::size_t> recv(std::span<std::byte> buf, Deadline deadline = Deadline::never()) const;
  Result<std::size_t> try_recv(std::span<std::byte> buf) const;
  // Fills `buf` (streams): errc::end_of_stream before any byte, errc::truncated part way.
  Result<void> recv_exact(std::span<std::byte> buf, Deadline deadline = Deadline::never()) const;

  // No more sends from us: the peer reads end of stream.
  Result<void> shutdown_write() const;

  // Unix sockets.
  Result<Credentials> peer_credentials() const;
  // Sends `data` (at least one byte) together with descriptors (SCM_RIGHTS).
  Result<void> send_fds(std::span<const std::byte> data, std::span<const int> fds,
                        Deadline deadline = Deadline::never()) const;
  // Receives data and the descriptors sent with it (close-on-exec). Fails
  // with EMSGSIZE if more descriptors came than `max_fds` (those are closed).
  Result<std::size_t> recv_fds(std::span<std::byte> buf, std::vector<Fd>& fds,
                               std::size_t max_fds = 16,
                               Deadline deadline = Deadline::never()) const;

  // Kernel buffers (SO_SNDBUF/SO_RCVBUF). The kernel doubles the value set
  // and caps it at net.core.[wr]mem_max; the getters return what it holds.
  Result<void> set_send_buffer(std::size_t bytes) const;
  Result<void> set_recv_buffer(std::size_t bytes) const;
  Result<std::size_t> send_buffer() const;
  Result<std::size_t> recv_buffer() const;

  // TCP only: TCP_NODELAY (tether turns it on for every TCP socket).
  Result<void> set_nodelay(bool on) const;

 private:
  Result<void> await(short events, Deadline deadline) const;
  Fd fd_;
  bool nonblocking_ = false;
  bool messages_ = false;  // seqpacket or datagram: one recv is one message
  std::string what_;
};

struct UnixListenOptions {
  SocketType type = SocketType::stream;  // stream or seqpacket
  int backlog = 128;
  PeerPolicy policy = PeerPolicy::same_user();
  // Of the socket file: exactly this, whatever the umask. The file is never
  // wider than this at any moment (see src/channel/socket.cpp, exact_mode).
  mode_t mode = 0600;
};

// A listening Unix socket. Owns its socket file and removes it when
// destroyed, only if the path still holds that socket (a NamedObject:
// owns(), release(), remove(), as every named object). An abstract address
// has no file: owns() is false.
class UnixListener {
 public:
  UnixListener() noexcept = default;

  // Binds and listens. A stale socket file at the path (no one listening)
  // is replaced; a live one is EADDRINUSE; anything that is not a socket is
  // refused.
  static Result<UnixListener> listen(const UnixAddress& address, UnixListenOptions options = {});

  // Accepts one connection. A peer the policy does not allow is closed and
  // reported as EACCES ("refuse connection on unix:/x from uid 65534 (pid
  // 123)"); call accept again to go on.
  Result<Socket> accept(Deadline deadline = Deadline::never()) const;

  int fd() const noexcept { return fd_.get(); }  // non-blocking; readable when a peer waits
  const UnixAddress& address() const noexcept { return address_; }

  // The socket file.
  bool owns() const noexcept { return file_.owns(); }
  // Keeps the file after this listener is gone (for a successor to replace
  // as stale, say).
  void release() noexcept { file_.release(); }
  // Removes the file now, if the path still holds our socket; the listener
  // keeps listening, unreachable by path.
  Result<void> remove() { return file_.remove(); }

 private:
  Fd fd_;
  UnixAddress address_;
  UnixListenOptions options_;
  NamedObject file_;  // declared last: removed before the socket closes
};

// Connects to a listening Unix socket (stream/seqpacket) or to a bound
// datagram socket. With a deadline, a listener whose backlog is full (it
// does not accept fast enough) is tried again with a backoff of 1 to 50 ms
// until the deadline, then timed_out; with Deadline::never() the kernel
// waits for room in the backlog.
Result<Socket> unix_connect(const UnixAddress& address, SocketType type = SocketType::stream,
                            Deadline deadline = Deadline::never());
// A bound datagram socket that receives messages sent to `address`; the
// file gets exactly `mode`, whatever the umask. The caller removes the file.
Result<Socket> unix_bind_datagram(const UnixAddress& address, mode_t mode = 0600);
// socketpair(AF_UNIX): two connected sockets, e.g. for a parent and a child.
Result<std::pair<Socket, Socket>> socket_pair(SocketType type = SocketType::stream);

// Errors of getaddrinfo(3) keep its own code (EAI_NONAME, EAI_AGAIN, ...)
// in this category, and its text (gai_strerror): "resolve no.such.host:80:
// Name or service not known (EAI_NONAME)". Test with
// `err.code() == std::error_code(EAI_NONAME, tether::resolver_category())`.
// EAI_SYSTEM is reported as the errno it carries.
const std::error_category& resolver_category() noexcept;

// TCP over IPv4 and IPv6. Hosts are names or numeric addresses.
class TcpListener {
 public:
  // Port 0 picks a free port (see port()). An empty host listens on every
  // interface of the machine (the wildcard addresses 0.0.0.0 and ::), as
  // does "0.0.0.0" or "::"; give "127.0.0.1" or "::1" for this machine only.
  static Result<TcpListener> listen(std::string_view host, std::uint16_t port, int backlog = 128);
  Result<Socket> accept(Deadline deadline = Deadline::never()) const;
  std::uint16_t port() const noexcept { return port_; }
  int fd() const noexcept { return fd_.get(); }

 private:
  Fd fd_;
  std::uint16_t port_ = 0;
  std::string what_;
};
Result<Socket> tcp_connect(std::string_view host, std::uint16_t port,
                           Deadline deadline = Deadline::never());

// ---------------------------------------------------------------- UDP

// An IPv4 or IPv6 address and a port, numeric: what recv_from reports and
// send_to takes.
class InetAddress {
 public:
  InetAddress() noexcept = default;
  // A numeric host ("127.0.0.1", "::1", "fe80::1%eth0"); no name lookup.
  static Result<InetAddress> parse(std::string_view host, std::uint16_t port);
  // From a sockaddr_in or sockaddr_in6 (EAFNOSUPPORT for anything else).
  static Result<InetAddress> from_sockaddr(const sockaddr* address, socklen_t length);

  bool valid() const noexcept { return length_ != 0; }
  bool is_v6() const noexcept { return storage_.ss_family == AF_INET6; }
  std::string host() const;  // "127.0.0.1", "::1"
  std::uint16_t port() const noexcept;
  // "127.0.0.1:5000" or "[::1]:5000".
  std::string describe() const;

  // For the system calls.
  const sockaddr* sockaddr_ptr() const noexcept {
    return reinterpret_cast<const sockaddr*>(&storage_);
  }
  socklen_t sockaddr_length() const noexcept { return length_; }

  // Same family, address, port (and IPv6 scope).
  friend bool operator==(const InetAddress& a, const InetAddress& b) noexcept;

 private:
  sockaddr_storage storage_{};
  socklen_t length_ = 0;
};

// The largest UDP payload. IPv4: 65535 bytes in all, less 20 of IP header
// and 8 of UDP header. IPv6: 65535 bytes after its own header, less 8 of
// UDP header. (IPv6 jumbograms are not supported.)
inline constexpr std::size_t udp_max_payload_v4 = 65507;
inline constexpr std::size_t udp_max_payload_v6 = 65527;

// One datagram received: its size and who sent it.
struct Datagram {
  std::size_t size = 0;
  InetAddress from;
};

// A UDP socket (IPv4 or IPv6). Move-only, close-on-exec.
//
// What UDP promises, and what it does not: a datagram arrives whole or not
// at all, with its boundaries. It may be lost (a full receive buffer, the
// network), arrive twice, or arrive out of order; nothing here retries,
// acknowledges or reorders. On a connected socket, an ICMP "port
// unreachable" from the peer (nobody bound there) is reported by a later
// send or recv as connection_refused (udp(7)); it says nothing about which
// datagram was lost.
//
// Sizes: a datagram larger than UDP carries (udp_max_payload_v4/_v6) is
// refused by send with EMSGSIZE, nothing sent. A datagram larger than the
// buffer given to recv is never silently cut: recv fails with EMSGSIZE
// naming both sizes, and that datagram is consumed (a datagram cannot be
// read in two parts). An empty datagram is a datagram: recv returns 0.
class UdpSocket {
 public:
  UdpSocket() noexcept = default;

  // Binds to host:port; port 0 picks a free (ephemeral) one: see
  // local_address(). host as for TcpListener::listen: "" or "0.0.0.0"
  // receives on every interface, "127.0.0.1" on loopback only. A name is
  // resolved and the first address that binds is used.
  static Result<UdpSocket> bind(std::string_view host, std::uint16_t port);

  // Sets the only peer: send() goes there, recv() takes only its datagrams.
  // connect(2) on UDP sends nothing and cannot tell whether anyone listens.
  // Datagrams from others that were already queued are still received.
  Result<void> connect(const InetAddress& peer);

  bool valid() const noexcept { return fd_.valid(); }
  // Readable when a datagram waits; writable when a send would not block.
  int fd() const noexcept { return fd_.get(); }
  Fd& handle() noexcept { return fd_; }
  [[nodiscard]] Fd release() noexcept { return std::move(fd_); }
  Result<void> close() noexcept { return fd_.close(); }
  // "udp://127.0.0.1:5000", or "udp://127.0.0.1:5000 to 127.0.0.1:6000" once connected.
  const std::string& description() const noexcept { return what_; }
  const InetAddress& local_address() const noexcept { return local_; }
  const std::optional<InetAddress>& peer() const noexcept { return peer_; }

  // One whole datagram to the connected peer, waiting for room in the send
  // buffer until the deadline.
  Result<void> send(std::span<const std::byte> datagram,
                    Deadline deadline = Deadline::never()) const;
  Result<void> send(std::string_view text, Deadline deadline = Deadline::never()) const {
    return send(std::as_bytes(std::span(text)), deadline);
  }
  Result<void> try_send(std::span<const std::byte> datagram) const;
  Result<void> send_to(std::span<const std::byte> datagram, const InetAddress& to,
                       Deadline deadline = Deadline::never()) const;
  Result<void> try_send_to(std::span<const std::byte> datagram, const InetAddress& to) const;

  // One whole datagram into `buf`: its size. timed_out at the deadline;
  // the try_ forms fail with would-block when nothing waits.
  Result<std::size_t> recv(std::span<std::byte> buf, Deadline deadline = Deadline::never()) const;
  Result<std::size_t> try_recv(std::span<std::byte> buf) const;
  // The same, with the sender's address.
  Result<Datagram> recv_from(std::span<std::byte> buf, Deadline deadline = Deadline::never()) const;
  Result<Datagram> try_recv_from(std::span<std::byte> buf) const;

  // Kernel buffers (SO_SNDBUF/SO_RCVBUF), as for Socket.
  Result<void> set_send_buffer(std::size_t bytes) const;
  Result<void> set_recv_buffer(std::size_t bytes) const;

 private:
  friend Result<UdpSocket> udp_connect(std::string_view host, std::uint16_t port);
  Result<void> send_impl(std::span<const std::byte> datagram, const InetAddress* to,
                         Deadline deadline, bool once) const;
  Result<Datagram> recv_impl(std::span<std::byte> buf, Deadline deadline, bool once) const;
  Fd fd_;
  InetAddress local_;
  std::optional<InetAddress> peer_;
  std::string what_;
};

// A UDP socket on an ephemeral local port, connected to host:port (a name
// is resolved; the first address is used). Nothing is sent: whether anyone
// listens there shows only later, if at all (connection_refused).
Result<UdpSocket> udp_connect(std::string_view host, std::uint16_t port);

}  // namespace tether
