// tether/channel/transport.hpp — what a Channel runs over.
//
// A Channel is one Transport behind one message API. Each kernel mechanism
// is one Transport type (private to the channel layer): byte streams (pipe,
// FIFO, Unix stream, TCP) share one stream framer; seqpacket, UDP, POSIX
// and System V queues keep message boundaries themselves. A new mechanism
// (the shared-memory queue, next) is a new Transport, handed to
// Channel::over(); nothing else changes.
//
// Contract for an implementation: send() gets whole messages no larger than
// the channel's max_message (Channel checked); recv() returns one whole
// message, or errc::end_of_stream when the peer closed between messages
// (Channel then refuses every later send with broken_pipe), or timed_out at
// the deadline; never a message cut short. Deadline::immediate() must never
// block. Errors name the operation and description().
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tether/sys.hpp"

namespace tether {

class Transport {
 public:
  explicit Transport(std::string description) noexcept : what_(std::move(description)) {}
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;
  virtual ~Transport() = default;

  // One whole message.
  virtual Result<void> send(std::span<const std::byte> message, Deadline deadline) = 0;
  // What a send cut short by its deadline left to write (byte streams keep
  // the tail of the frame); transports that send whole messages have none.
  virtual Result<void> flush(Deadline) { return {}; }
  // One whole message.
  virtual Result<std::vector<std::byte>> recv(Deadline deadline) = 0;
  // recv() into storage the caller keeps (see Channel::recv_into). This
  // default moves recv()'s vector in; transports override it to reuse `into`.
  virtual Result<void> recv_into(std::vector<std::byte>& into, Deadline deadline) {
    auto m = recv(deadline);
    if (!m) return std::unexpected(m.error());
    into = std::move(*m);
    return {};
  }
  // Readable when a message (or part of one) may be waiting; -1 when the
  // mechanism has no descriptor (System V queues).
  virtual int fd() const noexcept = 0;
  // Releases the kernel resources; the peer sees end of stream where the
  // mechanism has one. Later calls are refused by Channel.
  virtual Result<void> close() noexcept = 0;

  // "unix:/run/app.sock", "pipe channel", "mq:/jobs" ...
  const std::string& description() const noexcept { return what_; }

 protected:
  std::string what_;
};

}  // namespace tether
