// tether/channel/message_queue.hpp — POSIX (mq_*) and System V (msg*) queues.
//
//   auto q = tether::PosixQueue::create("/jobs", {.capacity = 10, .message_size = 1024});
//   q->send("urgent", /*priority=*/9);
//   auto m = q->recv(1s);                 // highest priority first: "urgent", 9
//
//   auto s = tether::SysvQueue::create(tether::SysvKey::private_key());
//   s->send(/*type=*/2, "for readers of type 2");
//   auto t = s->recv(/*type=*/-3, 1s);    // lowest type <= 3 first
//
// The creator of a queue owns it and removes it when destroyed, if its name
// (or id) still holds that queue; other processes open it without owning it.
// Ownership is a NamedObject: owns(), release(), remove(), as for every
// named object (tether/sys/named.hpp). Queues are created with exactly the
// mode asked (0600 by default), whatever the umask.
// A message larger than the queue allows is an EMSGSIZE error on send,
// never truncated on either end.
#pragma once

#include <mqueue.h>
#include <sys/ipc.h>
#include <sys/types.h>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tether/sys.hpp"
#include "tether/sys/named.hpp"

namespace tether {

namespace detail {
class SysvTransport;
}  // namespace detail

// ---------------------------------------------------------------- POSIX

struct PosixQueueOptions {
  long capacity = 10;        // messages (mq_maxmsg; /proc/sys/fs/mqueue/msg_max caps it)
  long message_size = 8192;  // bytes per message (mq_msgsize; msgsize_max caps it)
  mode_t mode = 0600;
};

struct PosixMessage {
  std::vector<std::byte> data;
  unsigned priority = 0;
  std::string_view text() const noexcept {
    return {reinterpret_cast<const char*>(data.data()), data.size()};
  }
};

class PosixQueue {
 public:
  struct Attributes {
    long capacity, message_size, depth;  // depth: messages waiting now
  };

  PosixQueue() noexcept = default;

  // Creates a new queue (fails with EEXIST if the name is taken). Names
  // look like "/jobs": one leading slash, no other (check_posix_ipc_name).
  static Result<PosixQueue> create(std::string name, PosixQueueOptions options = {});
  // Opens an existing queue, without owning it.
  static Result<PosixQueue> open(std::string name);

  // Sends one message with a priority (higher is received first; at most
  // sysconf(_SC_MQ_PRIO_MAX) - 1, 32767 on Linux).
  Result<void> send(std::span<const std::byte> data, unsigned priority = 0,
                    Deadline deadline = Deadline::never()) const;
  Result<void> send(std::string_view text, unsigned priority = 0,
                    Deadline deadline = Deadline::never()) const {
    return send(std::as_bytes(std::span(text)), priority, deadline);
  }
  Result<void> try_send(std::span<const std::byte> data, unsigned priority = 0) const;
  // Receives the oldest message of the highest priority.
  Result<PosixMessage> recv(Deadline deadline = Deadline::never()) const;
  Result<PosixMessage> try_recv() const;
  // The same into a buffer you keep, at least message_size() bytes (the
  // kernel refuses a shorter one, EMSGSIZE): the message's size, and its
  // priority in *priority if given. Nothing is allocated.
  Result<std::size_t> recv_into(std::span<std::byte> buf, Deadline deadline = Deadline::never(),
                                unsigned* priority = nullptr) const;

  Result<Attributes> attributes() const;
  // The queue descriptor: readable when a message waits, writable when
  // there is room. It is in blocking mode: with Deadline::never() a call
  // sleeps in the kernel; other deadlines poll it on the steady clock.
  int fd() const noexcept { return mq_.get(); }
  // mq_msgsize: the largest message, and the least a receive buffer holds.
  std::size_t message_size() const noexcept { return static_cast<std::size_t>(message_size_); }
  const std::string& name() const noexcept { return object_.name(); }
  bool owns() const noexcept { return object_.owns(); }
  // Keeps the queue after this object is gone.
  void release() noexcept { object_.release(); }
  [[deprecated("use release()")]] void release_ownership() noexcept { release(); }
  // mq_unlink now, if the name still holds this queue (EEXIST, "left
  // alone", otherwise); the queue lives on while it is open.
  Result<void> remove() { return object_.remove(); }
  [[deprecated("use remove()")]] Result<void> unlink() { return remove(); }
  // Closes our descriptor (an owner still removes the name when destroyed).
  Result<void> close() noexcept;

 private:
  Result<void> send_impl(std::span<const std::byte> data, unsigned priority, Deadline deadline,
                         bool once) const;
  Result<std::size_t> recv_impl(std::span<std::byte> buf, unsigned* priority, Deadline deadline,
                                bool once) const;
  Fd mq_;  // an mqd_t is a descriptor on Linux (mq_overview(7)): mq_close is close
  long message_size_ = 0;
  NamedObject object_;  // the name, and whether we remove it
};

// ---------------------------------------------------------------- System V

struct SysvMessage {
  long type = 0;
  std::vector<std::byte> data;
  std::string_view text() const noexcept {
    return {reinterpret_cast<const char*>(data.data()), data.size()};
  }
};

class SysvQueue {
 public:
  // A queue no other process can find by key (pass its id instead); the
  // same as SysvKey::private_key().
  static constexpr SysvKey private_key = SysvKey::private_key();

  struct Stats {
    std::size_t depth;      // messages waiting (msg_qnum)
    std::size_t bytes;      // bytes waiting (msg_cbytes)
    std::size_t max_bytes;  // queue capacity in bytes (msg_qbytes)
    pid_t last_sender, last_receiver;
  };

  SysvQueue() noexcept = default;

  // Creates a new queue (IPC_CREAT|IPC_EXCL: EEXIST if the key is taken),
  // with exactly `mode`: System V permissions are not subject to the umask.
  // Keys: SysvKey::from_path (ftok), SysvKey::from_number, SysvKey::private_key().
  static Result<SysvQueue> create(SysvKey key, mode_t mode = 0600);
  // Opens an existing queue by key, or by the id msgget returned, without owning it.
  static Result<SysvQueue> open(SysvKey key);
  static SysvQueue from_id(int id) noexcept;

  // Sends a message of `type` (> 0). Too large for the system's maximum
  // (/proc/sys/kernel/msgmax) is EMSGSIZE. System V queues have no
  // descriptor to poll: Deadline::never() blocks in the kernel, other
  // deadlines retry with a backoff from 1 to 20 ms (tether::Backoff).
  Result<void> send(long type, std::span<const std::byte> data,
                    Deadline deadline = Deadline::never()) const;
  Result<void> send(long type, std::string_view text, Deadline deadline = Deadline::never()) const {
    return send(type, std::as_bytes(std::span(text)), deadline);
  }
  Result<void> try_send(long type, std::span<const std::byte> data) const;
  // Receives by the kernel's rules: type 0, the first message; type > 0,
  // the first of that type; type < 0, the first of the lowest type <= |type|.
  Result<SysvMessage> recv(long type = 0, Deadline deadline = Deadline::never()) const;
  Result<SysvMessage> try_recv(long type = 0) const;

  Result<Stats> stats() const;
  int id() const noexcept { return object_.id(); }
  bool owns() const noexcept { return object_.owns(); }
  // Keeps the queue after this object is gone.
  void release() noexcept { object_.release(); }
  [[deprecated("use release()")]] void release_ownership() noexcept { release(); }
  // IPC_RMID: removes the queue now (if its id still names the queue made
  // with our key: EEXIST, "left alone", otherwise); waiting senders and
  // receivers get EIDRM.
  Result<void> remove() { return object_.remove(); }

 private:
  // Channel's sysv transport keeps the kernel's buffers across messages.
  friend class detail::SysvTransport;
  // `scratch` holds the kernel's form of a message (a long, then the text)
  // and is reused: a loop that passes the same one allocates nothing.
  Result<void> send_impl(long type, std::span<const std::byte> data, Deadline deadline, bool once,
                         std::vector<std::byte>& scratch) const;
  // The text's size; the message is in `scratch`, after its type.
  Result<std::size_t> recv_impl(long type, Deadline deadline, bool once,
                                std::vector<std::byte>& scratch) const;
  Result<SysvMessage> recv_message(long type, Deadline deadline, bool once) const;
  NamedObject object_;  // the id (and key), and whether we remove it
};

// The largest System V message this system accepts (/proc/sys/kernel/msgmax,
// read once per process).
std::size_t sysv_max_message();

}  // namespace tether
