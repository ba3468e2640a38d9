// tether/channel/message_queue.hpp — POSIX (mq_*) and System V (msg*) queues.
//
//   auto q = tether::PosixQueue::create("/jobs", {.capacity = 10, .message_size = 1024});
//   q->send("urgent", /*priority=*/9);
//   auto m = q->recv(1s);                 // highest priority first: "urgent", 9
//
//   auto s = tether::SysvQueue::create(tether::SysvQueue::private_key);
//   s->send(/*type=*/2, "for readers of type 2");
//   auto t = s->recv(/*type=*/-3, 1s);    // lowest type <= 3 first
//
// The creator of a queue owns it and removes it when destroyed; other
// processes open it without owning it. Queues are created with exactly the
// mode asked (0600 by default), whatever the umask.
// A message larger than the queue allows is an EMSGSIZE error on send,
// never truncated on either end.
#pragma once

#include <mqueue.h>
#include <sys/ipc.h>
#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tether/sys.hpp"

namespace tether {

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
  PosixQueue(PosixQueue&& other) noexcept;
  PosixQueue& operator=(PosixQueue&& other) noexcept;
  ~PosixQueue();

  // Creates a new queue (fails with EEXIST if the name is taken). Names
  // look like "/jobs": one leading slash, no other.
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
  int fd() const noexcept { return mq_; }
  // mq_msgsize: the largest message, and the least a receive buffer holds.
  std::size_t message_size() const noexcept { return static_cast<std::size_t>(message_size_); }
  const std::string& name() const noexcept { return name_; }
  bool owns() const noexcept { return owned_; }
  void release_ownership() noexcept { owned_ = false; }
  // mq_unlink now; the queue lives on while it is open.
  Result<void> unlink();
  Result<void> close() noexcept;

 private:
  Result<void> send_impl(std::span<const std::byte> data, unsigned priority, Deadline deadline,
                         bool once) const;
  Result<std::size_t> recv_impl(std::span<std::byte> buf, unsigned* priority, Deadline deadline,
                                bool once) const;
  mqd_t mq_ = -1;
  std::string name_;
  long message_size_ = 0;
  bool owned_ = false;
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
  // A queue no other process can find by key (pass its id instead).
  static constexpr key_t private_key = IPC_PRIVATE;

  struct Stats {
    std::size_t depth;      // messages waiting (msg_qnum)
    std::size_t bytes;      // bytes waiting (msg_cbytes)
    std::size_t max_bytes;  // queue capacity in bytes (msg_qbytes)
    pid_t last_sender, last_receiver;
  };

  SysvQueue() noexcept = default;
  SysvQueue(SysvQueue&& other) noexcept;
  SysvQueue& operator=(SysvQueue&& other) noexcept;
  ~SysvQueue();

  // ftok(3): a key from an existing path and a project id (1..255).
  static Result<key_t> key_from_path(const std::filesystem::path& path, int project_id);
  // Creates a new queue (IPC_CREAT|IPC_EXCL: EEXIST if the key is taken),
  // with exactly `mode`: System V permissions are not subject to the umask.
  static Result<SysvQueue> create(key_t key, mode_t mode = 0600);
  // Opens an existing queue by key, or by the id msgget returned, without owning it.
  static Result<SysvQueue> open(key_t key);
  static SysvQueue from_id(int id) noexcept;

  // Sends a message of `type` (> 0). Too large for the system's maximum
  // (/proc/sys/kernel/msgmax) is EMSGSIZE. System V queues have no
  // descriptor to poll: Deadline::never() blocks in the kernel, other
  // deadlines retry with a backoff from 1 to 20 ms.
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
  int id() const noexcept { return id_; }
  bool owns() const noexcept { return owned_; }
  void release_ownership() noexcept { owned_ = false; }
  // IPC_RMID: removes the queue now; waiting senders and receivers get EIDRM.
  Result<void> remove();

 private:
  Result<void> send_impl(long type, std::span<const std::byte> data, Deadline deadline,
                         bool once) const;
  Result<SysvMessage> recv_impl(long type, Deadline deadline, bool once) const;
  int id_ = -1;
  bool owned_ = false;
};

// The largest System V message this system accepts (/proc/sys/kernel/msgmax,
// read once per process).
std::size_t sysv_max_message();

}  // namespace tether
