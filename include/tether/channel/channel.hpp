// tether/channel/channel.hpp — one message API over every kernel transport.
//
//   auto server = tether::ChannelListener::listen("unix:/run/user/1000/app.sock");
//   auto client = tether::Channel::connect("unix:/run/user/1000/app.sock", 2s);
//   auto conn = server->accept(5s);
//   client->send("hello");                       // a whole message
//   auto msg = conn->recv_string(5s);             // "hello", boundaries kept
//
// Change the address to change the transport; the program stays the same.
//
// Addresses:
//   unix:/path              Unix stream socket (length-prefixed frames)
//   unix-seqpacket:/path    Unix seqpacket socket (the kernel keeps boundaries)
//   unix-abstract:name      Unix stream socket in the abstract namespace
//   tcp://host:port         TCP, IPv4 or IPv6 ([::1]:port); TCP_NODELAY on. An empty
//                           host (tcp://:PORT) listens on every interface;
//                           tcp://127.0.0.1:PORT on this machine only
//   udp://host:port         UDP, IPv4 or IPv6: one message is one datagram (see below)
//   fifo:/path              two FIFOs, /path.c2s and /path.s2c (length-prefixed frames)
//   mq:/name                two POSIX queues, /name.c2s and /name.s2c
//   sysv:KEY                one System V queue (KEY in decimal or 0x hex, or a
//                           path for ftok); type 1 to the server, 2 back
//   shm:/name               two shared-memory queues (tether/queue.hpp), /name.c2s
//                           and /name.s2c: no system call per message
//
// FIFO, mq, sysv and shm channels are one conversation at a time: the
// listener creates (and removes) the named objects, accept() hands out the
// server's end (for shm:, a new pair of queues once the last conversation
// ended). An shm: channel has a connection's end of stream: close() on
// either side, or its process's death, ends it for the other (recv drains,
// then end_of_stream; send gets broken_pipe). Each direction's ring holds
// two of the largest messages at least, so shm: reserves about 4 x
// max_message of shared memory per direction: lower max_message for many
// channels. A shm: channel's end belongs to the thread that made it (a
// queue participant, see queue.hpp); its fd() is the incoming queue's
// (Queue::fd(): poll, then try_recv until would-block). POSIX and System
// V queues have no end of stream: their recv only ever times out. A sysv
// channel has no descriptor (fd() is -1): its waits poll with backoff.
// sysv:0 (IPC_PRIVATE) and keys beyond 32 bits are refused.
//
// UDP channels keep UDP's contract: a message arrives whole or not at all,
// but may be lost, duplicated or reordered, and nothing tells the sender;
// there is no end of stream (recv only times out; a vanished peer may show
// as connection_refused). max_message is capped at the largest UDP payload
// (65507 bytes over IPv4, 65527 over IPv6). The client speaks first: a UDP
// listener learns of a peer only from its first datagram. accept() waits
// for that datagram and returns a channel connected to its sender, which
// receives it as its first message; the listener's one socket goes to that
// channel, so a UDP listener serves one peer, and a second accept() fails
// with EISCONN (see ChannelListener::UdpPort::accept for why).
//
// Frames on byte streams: a 4-byte little-endian length, then the payload,
// written with one vectored system call. A frame longer than the maximum
// message size is refused on both ends; a frame cut short by the peer's end
// (it died mid-message) is reported as errc::truncated, never delivered.
// After a framing error the channel is broken: every later call fails.
//
// End of stream and a vanished peer look the same on every transport:
// recv fails with errc::end_of_stream when the peer closed cleanly between
// messages; send fails with std::errc::broken_pipe (or connection_reset)
// when the peer is gone, and always once recv has seen end of stream. (On
// TCP alone, a send made before anything noticed the close may still be
// accepted: the kernel learns of it from the peer's reset.) Nothing raises
// SIGPIPE.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "tether/channel/fifo.hpp"
#include "tether/channel/message_queue.hpp"
#include "tether/channel/pipe.hpp"
#include "tether/channel/socket.hpp"
#include "tether/channel/transport.hpp"
#include "tether/sys.hpp"

namespace tether {

struct ChannelOptions {
  // Largest message accepted for sending or receiving.
  std::size_t max_message = 16u << 20;
  // Kernel buffer to ask for (pipe capacity, socket send/receive buffer);
  // 0 leaves the kernel's default. Bigger buffers move large messages
  // faster (see docs/benchmarks.md); the kernel may cap them.
  std::size_t buffer_size = 1u << 20;
};

namespace detail {
class ListenPort;
}  // namespace detail

// A message channel: one Transport (transport.hpp) behind one API.
class Channel {
 public:
  Channel() noexcept = default;
  Channel(Channel&&) noexcept = default;
  Channel& operator=(Channel&&) noexcept = default;

  // Over transports you already have.
  static Result<Channel> over_pipes(PipeReader in, PipeWriter out, ChannelOptions options = {});
  static Result<Channel> over_socket(Socket socket, ChannelOptions options = {});
  // Two connected ends in this process (e.g. to hand one to a fork child).
  static Result<std::pair<Channel, Channel>> pipe_pair(ChannelOptions options = {});
  static Result<std::pair<Channel, Channel>> socket_pair(SocketType type = SocketType::stream,
                                                         ChannelOptions options = {});
  // A UDP socket with its peer set (UdpSocket::connect, udp_connect): one
  // message per datagram. With `only_from`, datagrams from anyone else are
  // dropped on receive (those queued before connect(2)).
  static Result<Channel> over_udp(UdpSocket socket,
                                  std::optional<InetAddress> only_from = std::nullopt,
                                  ChannelOptions options = {});
  // Over any transport, yours included (see transport.hpp).
  static Result<Channel> over(std::unique_ptr<Transport> transport, ChannelOptions options = {});
  // Connects to a ChannelListener's address (see the list above).
  static Result<Channel> connect(std::string_view address, Deadline deadline = Deadline::never(),
                                 ChannelOptions options = {});

  bool valid() const noexcept { return transport_ != nullptr && !closed_; }
  // Readable when a message (or part of one) is waiting: for poll/epoll.
  // A message may already be buffered: call try_recv until it would block.
  // -1 for a sysv channel (no descriptor) and a closed one.
  int fd() const noexcept { return valid() ? transport_->fd() : -1; }
  const std::string& description() const noexcept;
  std::size_t max_message() const noexcept { return options_.max_message; }

  // Sends one whole message.
  Result<void> send(std::span<const std::byte> message, Deadline deadline = Deadline::never());
  Result<void> send(std::string_view text, Deadline deadline = Deadline::never()) {
    return send(std::as_bytes(std::span(text)), deadline);
  }
  // Never blocks: would-block if nothing could be sent. If the kernel took
  // part of a frame, the rest is kept and sent first by the next call (or
  // flush()); the message counts as sent.
  Result<void> try_send(std::span<const std::byte> message);
  // Sends what try_send left over.
  Result<void> flush(Deadline deadline = Deadline::never());

  // Receives one whole message.
  Result<std::vector<std::byte>> recv(Deadline deadline = Deadline::never());
  Result<std::vector<std::byte>> try_recv();
  // recv() into a buffer you keep: its storage is reused, so a loop
  // receiving messages of one size allocates and zero-fills nothing
  // (measured: docs/benchmarks.md). On failure `into` is left empty or
  // unchanged; a message cut by a timeout is kept for the next call.
  Result<void> recv_into(std::vector<std::byte>& into, Deadline deadline = Deadline::never());
  Result<std::string> recv_string(Deadline deadline = Deadline::never());

  // Trivially copyable values, sent as their bytes (no serialization).
  template <class T>
  requires std::is_trivially_copyable_v<T> Result<void> send_value(
      const T& value, Deadline deadline = Deadline::never()) {
    return send(std::as_bytes(std::span(&value, 1)), deadline);
  }
  template <class T>
  requires std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T> Result<T>
  recv_value(Deadline deadline = Deadline::never()) {
    auto m = recv(deadline);
    if (!m) return std::unexpected(m.error());
    if (m->size() != sizeof(T)) {
      return fail(EBADMSG, "receive a value of " + std::to_string(sizeof(T)) + " bytes on " +
                               description() + ": got a message of " + std::to_string(m->size()));
    }
    T value;
    std::memcpy(&value, m->data(), sizeof(T));
    return value;
  }

  // Closes both directions; the peer sees end of stream.
  Result<void> close() noexcept;

 private:
  Result<void> check_usable() const;
  std::unique_ptr<Transport> transport_;
  ChannelOptions options_;
  bool closed_ = false;
  bool peer_gone_ = false;  // recv saw end of stream: a Channel has no half-close
};

// Accepts channels on an address (see Channel's list).
class ChannelListener {
 public:
  ChannelListener() noexcept;
  ChannelListener(ChannelListener&&) noexcept;
  ChannelListener& operator=(ChannelListener&&) noexcept;
  ~ChannelListener();

  static Result<ChannelListener> listen(std::string_view address, ChannelOptions options = {},
                                        PeerPolicy policy = PeerPolicy::same_user());
  Result<Channel> accept(Deadline deadline = Deadline::never()) const;
  // Readable when a peer waits; -1 for fifo:, mq:, sysv: and shm: (their accept
  // only hands out the listener's end).
  int fd() const noexcept;
  // The address, with the real port for tcp://host:0 and udp://host:0.
  const std::string& address() const noexcept { return address_; }

 private:
  // One kind per transport (src/channel/channel.cpp): a Unix or TCP
  // listening socket, a UDP port, or the named objects of a fifo:, mq: or
  // sysv: rendezvous, which this listener created and removes.
  std::unique_ptr<detail::ListenPort> port_;
  ChannelOptions options_;
  std::string address_;
};

}  // namespace tether
