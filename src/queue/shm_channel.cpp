// Channel over shared memory, shm:/name (tether/channel/channel.hpp): two
// Queues, /name.c2s (client to server) and /name.s2c, created and owned by
// the listener. Each is a close_on_death queue: when the peer dies, the
// queue it puts on closes (our recv drains it, then sees end of stream) and
// the one it gets from closes (our send gets broken_pipe). close() closes
// both, which is the clean end of stream.
#include <fmt/format.h>

#include "../channel/transports.hpp"
#include "tether/queue/queue.hpp"

namespace tether::detail {

namespace {

QueueOptions queue_options(const ChannelOptions& o) {
  QueueOptions q;
  q.max_message = o.max_message;
  // The ring holds two of the largest messages at least (Queue's rule);
  // a buffer_size asked for above that is honoured.
  const std::size_t least = 2 * ((o.max_message + 16 + 63) / 64 * 64) + 64;
  if (o.buffer_size >= least) q.capacity_bytes = o.buffer_size;
  q.close_on_death = true;
  return q;
}

class ShmTransport final : public Transport {
 public:
  ShmTransport(Queue in, Queue out, std::string what)
      : Transport(std::move(what)), in_(std::move(in)), out_(std::move(out)) {
    // Readable when a message waits, or the peer has gone (see Queue::fd).
    fd_ = in_.fd().value_or(-1);
  }
  Result<void> send(std::span<const std::byte> message, Deadline deadline) override {
    return out_.put(message, deadline);
  }
  Result<std::vector<std::byte>> recv(Deadline deadline) override { return in_.get(deadline); }
  Result<void> recv_into(std::vector<std::byte>& into, Deadline deadline) override {
    return in_.get_into(into, deadline);
  }
  int fd() const noexcept override { return fd_; }
  Result<void> close() noexcept override {
    fd_ = -1;
    in_.close();
    out_.close();
    in_ = Queue();
    out_ = Queue();
    return {};
  }

 private:
  Queue in_, out_;
  int fd_ = -1;
};

Result<Channel> channel_over(Queue in, Queue out, const std::string& what,
                             const ChannelOptions& options) {
  if (auto ok = in.announce_consumer(); !ok) return std::unexpected(ok.error());
  if (auto ok = out.announce_producer(); !ok) return std::unexpected(ok.error());
  return Channel::over(std::make_unique<ShmTransport>(std::move(in), std::move(out), what),
                       options);
}

class ShmPort final : public ListenPort {
 public:
  ShmPort(std::string name, ChannelOptions options) noexcept
      : name_(std::move(name)), what_("shm:" + name_), options_(options) {}

  Result<void> make() {
    // The old conversation's queues go first, their names with them (the
    // old server end may still hold the queues themselves).
    if (c2s_.valid()) (void)c2s_.remove();
    if (s2c_.valid()) (void)s2c_.remove();
    c2s_ = Queue();
    s2c_ = Queue();
    auto c2s = Queue::create(name_ + ".c2s", queue_options(options_));
    if (!c2s) return std::unexpected(c2s.error());
    auto s2c = Queue::create(name_ + ".s2c", queue_options(options_));
    if (!s2c) return std::unexpected(s2c.error());
    c2s_ = std::move(*c2s);
    s2c_ = std::move(*s2c);
    return {};
  }

  Result<Channel> accept(Deadline, const ChannelOptions& options) override {
    // One conversation at a time: once it has ended (closed), the next
    // accept makes the queues again for the next client.
    if (c2s_.closed() || s2c_.closed()) {
      if (auto ok = make(); !ok) return fail(ok.error(), "accept on " + what_);
    }
    auto in = c2s_.another();
    if (!in) return fail(in.error(), "accept on " + what_);
    auto out = s2c_.another();
    if (!out) return fail(out.error(), "accept on " + what_);
    return channel_over(std::move(*in), std::move(*out), what_, options);
  }
  int fd() const noexcept override { return -1; }

 private:
  std::string name_, what_;
  ChannelOptions options_;
  Queue c2s_, s2c_;
};

}  // namespace

Result<Channel> shm_connect(const std::string& name, Deadline deadline,
                            const ChannelOptions& options) {
  const std::string what = "shm:" + name;
  // A listener still making its queues is waited for, never for ever.
  const Deadline ready = deadline.is_never() ? Deadline(std::chrono::seconds(1)) : deadline;
  auto out = Queue::open(name + ".c2s", ready);
  if (!out) return fail(out.error(), "connect to " + what);
  auto in = Queue::open(name + ".s2c", ready);
  if (!in) return fail(in.error(), "connect to " + what);
  return channel_over(std::move(*in), std::move(*out), what, options);
}

Result<std::unique_ptr<ListenPort>> shm_listen(const std::string& name,
                                               const ChannelOptions& options) {
  auto port = std::make_unique<ShmPort>(name, options);
  if (auto ok = port->make(); !ok) return std::unexpected(ok.error());
  return std::unique_ptr<ListenPort>(std::move(port));
}

}  // namespace tether::detail
