// tether/channel/socket.hpp — Unix-domain and TCP sockets.
//
//   auto server = tether::UnixListener::listen(tether::UnixAddress::path("/run/app.sock"));
//   auto client = tether::unix_connect(tether::UnixAddress::path("/run/app.sock"));
//   auto conn = server->accept(5s);               // refuses other users by default
//   client->send_all(bytes);                      // never dies of SIGPIPE
//
// Every socket is close-on-exec; sends use MSG_NOSIGNAL, so a peer that went
// away is `broken_pipe` (or `connection_reset`), never a SIGPIPE death.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tether/sys.hpp"

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
  static Result<UnixAddress> path(std::filesystem::path p);
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
  mode_t mode = 0600;  // of the socket file, set before bind (no umask race)
};

// A listening Unix socket. Owns its socket file and removes it when
// destroyed (only if the path still holds that socket).
class UnixListener {
 public:
  UnixListener() noexcept = default;
  UnixListener(UnixListener&& other) noexcept;
  UnixListener& operator=(UnixListener&& other) noexcept;
  ~UnixListener();

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

 private:
  void remove_file() noexcept;
  Fd fd_;
  UnixAddress address_;
  UnixListenOptions options_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  bool owns_file_ = false;
};

// Connects to a listening Unix socket (stream/seqpacket) or to a bound
// datagram socket.
Result<Socket> unix_connect(const UnixAddress& address, SocketType type = SocketType::stream,
                            Deadline deadline = Deadline::never());
// A bound datagram socket that receives messages sent to `address`.
Result<Socket> unix_bind_datagram(const UnixAddress& address, mode_t mode = 0600);
// socketpair(AF_UNIX): two connected sockets, e.g. for a parent and a child.
Result<std::pair<Socket, Socket>> socket_pair(SocketType type = SocketType::stream);

// TCP over IPv4 and IPv6. Hosts are names or numeric addresses.
class TcpListener {
 public:
  // Port 0 picks a free port (see port()).
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

}  // namespace tether
