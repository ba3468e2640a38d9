// The transports that keep message boundaries themselves: seqpacket, UDP,
// POSIX queues, System V queues. (Byte streams: stream.cpp.)
#include "transports.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "net.hpp"

namespace tether::detail {

namespace {

// One whole packet or datagram, waiting for room until the deadline
// (MSG_DONTWAIT only when a deadline must be kept: see SocketIo).
Result<void> send_whole(int fd, std::span<const std::byte> message, Deadline deadline,
                        const std::string& what) {
  for (;;) {
    int flags = MSG_NOSIGNAL | (deadline.is_never() ? 0 : MSG_DONTWAIT);
    ssize_t n = retry_eintr([&] { return ::send(fd, message.data(), message.size(), flags); });
    if (n >= 0) return {};
    if (errno != EAGAIN) return fail(errno, "send on " + what);
    if (auto r = await_event(fd, POLLOUT, deadline, "room to send on ", what); !r) return r;
  }
}

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

// Seqpacket and UDP receive each message whole into one buffer, kept for the
// channel's life and allocated uninitialised on first use, so only the pages
// messages touch are ever used; recv() copies a message out of it, and
// recv_into() into the caller's storage (no allocation once it is large
// enough).
class MessageSocket : public Transport {
 public:
  MessageSocket(Fd fd, std::string what, std::size_t max_message, std::size_t buffer)
      : Transport(std::move(what)), fd_(std::move(fd)), max_(max_message), pbuf_size_(buffer) {}

  Result<std::vector<std::byte>> recv(Deadline deadline) override {
    iovec iov{buffer(), pbuf_size_};
    auto n = receive({&iov, 1}, pbuf_size_, deadline);
    if (!n) return std::unexpected(n.error());
    return std::vector<std::byte>(pbuf_.get(), pbuf_.get() + *n);
  }
  // One scatter read: the caller's buffer first, at its current size, then
  // ours for a longer message. A message of the size of the last one lands
  // in place (no copy; a 64 KiB seqpacket loop copied each message twice).
  Result<void> recv_into(std::vector<std::byte>& into, Deadline deadline) override {
    std::size_t have = into.size();
    iovec iov[2] = {{into.data(), have}, {buffer(), pbuf_size_}};
    auto n = receive(iov, have + pbuf_size_, deadline);
    if (!n) {
      // A timeout read nothing (unless a stranger's datagram was dropped
      // into it); other failures may have: "left empty or unchanged".
      if (overwritten_ || (n.error() != std::errc::timed_out && !would_block(n.error())))
        into.clear();
      overwritten_ = false;
      return std::unexpected(n.error());
    }
    if (*n <= have) {
      into.resize(*n);  // smaller: neither allocates nor fills
    } else {
      into.resize(*n);  // keeps the bytes already in place
      std::memcpy(into.data() + have, pbuf_.get(), *n - have);
    }
    return {};
  }
  int fd() const noexcept override { return fd_.get(); }
  Result<void> close() noexcept override { return fd_.close(); }

 protected:
  // One message into `iov` (`room` bytes in all): its size. A message
  // longer than `room` is reported, never delivered cut.
  virtual Result<std::size_t> receive(std::span<iovec> iov, std::size_t room,
                                      Deadline deadline) = 0;
  // recvmsg(MSG_TRUNC) until a message comes or the deadline passes: the
  // message's real size (larger than the iovecs hold when it was cut).
  Result<std::size_t> recvmsg_waiting(msghdr& msg, Deadline deadline) {
    for (;;) {
      ssize_t size = retry_eintr([&] {
        return ::recvmsg(fd_.get(), &msg, MSG_TRUNC | (deadline.is_never() ? 0 : MSG_DONTWAIT));
      });
      if (size >= 0) return static_cast<std::size_t>(size);
      if (errno != EAGAIN) return fail(errno, "receive on " + what_);
      if (auto r = await_event(fd_.get(), POLLIN, deadline, "a message on ", what_); !r)
        return std::unexpected(r.error());
    }
  }
  std::byte* buffer() {
    if (!pbuf_) pbuf_ = std::make_unique_for_overwrite<std::byte[]>(pbuf_size_);
    return pbuf_.get();
  }
  Fd fd_;
  std::size_t max_;
  std::unique_ptr<std::byte[]> pbuf_;
  std::size_t pbuf_size_;
  bool overwritten_ = false;  // receive() read a message it did not deliver
};

// Seqpacket: the kernel keeps the boundaries; a packet of 0 bytes is what
// recv returns at end of stream, so empty messages are refused on send.
class SeqpacketTransport final : public MessageSocket {
 public:
  SeqpacketTransport(Fd fd, std::string what, std::size_t max_message)
      // One byte more than the largest packet expected: MSG_TRUNC makes recv
      // return the real length of a longer one, which is then reported.
      : MessageSocket(std::move(fd), std::move(what), max_message,
                      std::min(max_message, largest_seqpacket()) + 1) {}

  Result<void> send(std::span<const std::byte> message, Deadline deadline) override {
    if (message.empty()) {
      return fail(EINVAL, "send on " + what_ +
                              ": an empty message cannot be told from the end of a "
                              "seqpacket stream");
    }
    return send_whole(fd_.get(), message, deadline, what_);
  }

 private:
  Result<std::size_t> receive(std::span<iovec> iov, std::size_t room, Deadline deadline) override {
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = iov.size();
    auto size = recvmsg_waiting(msg, deadline);
    if (!size) return size;
    if (*size == 0) return fail(errc::end_of_stream, "receive on " + what_);
    auto n = *size;
    if (n > max_) {
      return fail(EMSGSIZE, fmt::format("receive on {}: a {}-byte message exceeds the maximum of "
                                        "{} bytes (discarded)",
                                        what_, n, max_));
    }
    if (n >= room) {
      return fail(EMSGSIZE,
                  fmt::format("receive on {}: a {}-byte message exceeds the largest packet "
                              "expected ({} bytes, twice net.core.wmem_max) (discarded)",
                              what_, n, room - 1));
    }
    return n;
  }
};

// UDP: one message is one datagram, sent whole or not at all, received
// whole or reported. An empty datagram is an empty message (UDP has no end
// of stream to confuse it with).
class DatagramTransport final : public MessageSocket {
 public:
  DatagramTransport(Fd fd, std::string what, std::size_t max_message,
                    const std::optional<InetAddress>& only_from)
      // max_message is at most the largest UDP payload (see over_udp), so the
      // buffer is at most 64 KiB, and one byte more than we accept: MSG_TRUNC
      // makes recvmsg return the real length of a larger one (recv(2)), which
      // is then reported, never delivered cut.
      : MessageSocket(std::move(fd), std::move(what), max_message, max_message + 1),
        peer_(only_from) {}

  Result<void> send(std::span<const std::byte> message, Deadline deadline) override {
    return send_whole(fd_.get(), message, deadline, what_);
  }

 private:
  Result<std::size_t> receive(std::span<iovec> iov, std::size_t room, Deadline deadline) override {
    for (;;) {
      sockaddr_storage from{};
      msghdr msg{};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof from;
      msg.msg_iov = iov.data();
      msg.msg_iovlen = iov.size();
      auto size = recvmsg_waiting(msg, deadline);
      if (!size) return size;
      if (peer_) {
        // An accepted channel's socket was the listener's, unconnected until
        // the first datagram came: datagrams from others queued before
        // connect(2) are still in its queue. They are not this conversation's.
        auto sender =
            InetAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&from), msg.msg_namelen);
        if (!sender || !(*sender == *peer_)) {
          overwritten_ = true;
          continue;
        }
      }
      auto n = *size;
      // Beyond `room` only when the caller's buffer and ours together hold
      // less than max_message + 1, which they never do: max_ decides.
      if (n > max_ || n >= room) {
        return fail(EMSGSIZE,
                    fmt::format("receive on {}: a {}-byte datagram exceeds the maximum of {} "
                                "bytes (it was consumed: discarded)",
                                what_, n, max_));
      }
      return n;
    }
  }

  std::optional<InetAddress> peer_;  // accepted: the only sender whose datagrams are ours
};

// POSIX queues are PosixQueue's, with its blocking policy (one system call
// per message with no deadline; see kExpired in message_queue.cpp). The
// receive buffer is one message long and kept: nothing is allocated or
// zero-filled per message but the message itself.
class PosixQueueTransport final : public Transport {
 public:
  PosixQueueTransport(PosixQueue in, PosixQueue out, std::string what)
      : Transport(std::move(what)),
        in_(std::move(in)),
        out_(std::move(out)),
        qbuf_(in_.message_size()) {}

  Result<void> send(std::span<const std::byte> message, Deadline deadline) override {
    return out_.send(message, 0, deadline);
  }
  Result<std::vector<std::byte>> recv(Deadline deadline) override {
    auto n = in_.recv_into(qbuf_, deadline);
    if (!n) return std::unexpected(n.error());
    return std::vector<std::byte>(qbuf_.data(), qbuf_.data() + *n);
  }
  Result<void> recv_into(std::vector<std::byte>& into, Deadline deadline) override {
    auto n = in_.recv_into(qbuf_, deadline);
    if (!n) return std::unexpected(n.error());
    into.assign(qbuf_.data(), qbuf_.data() + *n);
    return {};
  }
  int fd() const noexcept override { return in_.fd(); }
  Result<void> close() noexcept override {
    auto a = in_.close();  // ours are opened, not owned: closing unlinks nothing
    auto b = out_.close();
    return a ? b : a;
  }

 private:
  PosixQueue in_, out_;
  std::vector<std::byte> qbuf_;
};

}  // namespace

// System V queues have no descriptor: SysvQueue's own policy (block in the
// kernel with no deadline, back off with one). The kernel's buffers (a
// long, then the text) are kept across messages.
class SysvTransport final : public Transport {
 public:
  SysvTransport(int id, long send_type, long recv_type, std::string what)
      : Transport(std::move(what)),
        queue_(SysvQueue::from_id(id)),
        send_type_(send_type),
        recv_type_(recv_type) {}

  Result<void> send(std::span<const std::byte> message, Deadline deadline) override {
    return queue_.send_impl(send_type_, message, deadline, false, send_buf_);
  }
  Result<std::vector<std::byte>> recv(Deadline deadline) override {
    auto n = queue_.recv_impl(recv_type_, deadline, false, recv_buf_);
    if (!n) return std::unexpected(n.error());
    const std::byte* text = recv_buf_.data() + sizeof(long);
    return std::vector<std::byte>(text, text + *n);
  }
  Result<void> recv_into(std::vector<std::byte>& into, Deadline deadline) override {
    auto n = queue_.recv_impl(recv_type_, deadline, false, recv_buf_);
    if (!n) return std::unexpected(n.error());
    const std::byte* text = recv_buf_.data() + sizeof(long);
    into.assign(text, text + *n);
    return {};
  }
  int fd() const noexcept override { return -1; }
  // The queue belongs to the listener; we only stop using it.
  Result<void> close() noexcept override { return {}; }

 private:
  SysvQueue queue_;  // from its id: not owned
  long send_type_, recv_type_;
  std::vector<std::byte> send_buf_, recv_buf_;
};

std::unique_ptr<Transport> seqpacket_transport(Fd socket, std::string what,
                                               const ChannelOptions& options) {
  tune_socket_buffers(socket.get(), options);
  return std::make_unique<SeqpacketTransport>(std::move(socket), std::move(what),
                                              options.max_message);
}

std::unique_ptr<Transport> datagram_transport(Fd socket, std::string what,
                                              const ChannelOptions& options,
                                              const std::optional<InetAddress>& only_from) {
  tune_socket_buffers(socket.get(), options);
  return std::make_unique<DatagramTransport>(std::move(socket), std::move(what),
                                             options.max_message, only_from);
}

std::unique_ptr<Transport> posix_queue_transport(PosixQueue in, PosixQueue out, std::string what) {
  return std::make_unique<PosixQueueTransport>(std::move(in), std::move(out), std::move(what));
}

std::unique_ptr<Transport> sysv_transport(int id, long send_type, long recv_type,
                                          std::string what) {
  return std::make_unique<SysvTransport>(id, send_type, recv_type, std::move(what));
}

}  // namespace tether::detail
