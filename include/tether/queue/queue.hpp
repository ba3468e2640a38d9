// tether/queue/queue.hpp — a message queue in shared memory (multiprocessing.Queue
// without its pipe, feeder thread or pickling), that a participant killed
// -9 at any instant does not break.
//
//   auto q = tether::Queue::create("/jobs", {.max_message = 4096});  // owned, removed when q goes
//   q->put("hello");                                   // a whole message
//   ... in another process:
//   auto q = tether::Queue::open("/jobs");
//   auto m = q->get_string(5s);                        // "hello"
//
//   auto q = tether::Queue::anonymous();               // a memfd: shared with fork children
//   if (fork() == 0) { q->put_value(42); _exit(0); }   // the child joins by itself
//   int v = *q->get_value<int>();
//
// The queue is a ring of whole messages of any size up to max_message, in
// one shared segment. There is no daemon and no background thread: a put
// writes into the ring and a get reads from it, with no system call unless
// someone sleeps (a short spin, then a futex; the other side wakes a
// sleeper only when one is registered).
//
// Each Queue object is one participant: it holds a lease (a robust mutex,
// see sync.hpp) for as long as it exists, so that when its process dies,
// however it dies, the others are told by the kernel and undo what it left
// half done:
// - a message it was writing (put not returned, or a loan not committed) is
//   dropped, never delivered torn (stats().abandoned_writes);
// - a message it was copying out (get not returned) goes back in the queue
//   and is delivered to another get (stats().redelivered);
// - a message it held as a View (get_view returned: delivered) is released
//   (stats().reclaimed_views).
// Every message whose put returned is delivered to exactly one get that
// returned it, or is still in the queue.
//
// A participant belongs to the thread that made it (its lease is that
// thread's): use another() for each further thread. A fork child that uses
// an inherited Queue becomes a participant of its own on its first call.
// Participants must share a PID namespace (sync.hpp). At most 64 at once.
//
// The queue's memory stays mapped until the process exits (it holds robust
// mutexes: glibc bug 14485, see Mapping::keep_mapped).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "tether/shm.hpp"
#include "tether/sync.hpp"
#include "tether/sys.hpp"

namespace tether {

enum class Ends : unsigned char { one, many };

struct QueueOptions {
  // Largest message, in bytes.
  std::size_t max_message = 64u << 10;
  // Bytes of ring (rounded up to a power of two, at least 4 KiB). 0: room
  // for capacity_messages messages of max_message, or 1 MiB without that.
  std::size_t capacity_bytes = 0;
  // At most this many messages queued (Python's maxsize); 0: no limit but
  // the bytes.
  std::size_t capacity_messages = 0;
  // One producer or one consumer at a time (a second one is refused with
  // EBUSY while the first lives) skips the locks that many need.
  Ends producers = Ends::many;
  Ends consumers = Ends::many;
  // Permission bits of a named queue's segment.
  mode_t mode = 0600;
  // How many times a wait looks again before it sleeps.
  unsigned spin = 512;
  // Closes the queue when the last live participant that has put on it
  // dies (or the last that has got from it): its consumers then drain it
  // and see end_of_stream, its producers get broken_pipe. This is a
  // conversation's end of stream; Channel's shm: transport is made so. A
  // participant counts from its first put or get, or announce_*().
  bool close_on_death = false;
};

struct QueueStats {
  std::uint64_t puts = 0;               // messages put (claimed by a producer)
  std::uint64_t gets = 0;               // messages taken (or dropped: abandoned_writes)
  std::uint64_t abandoned_writes = 0;   // writer died before committing: never delivered
  std::uint64_t redelivered = 0;        // reader died mid-copy: put back, delivered again
  std::uint64_t reclaimed_views = 0;    // reader died holding a View: released
  std::uint64_t dead_participants = 0;  // participants found dead and cleaned up
  std::uint64_t tasks_dropped = 0;      // got by a consumer that died (or left) before task_done
  std::uint64_t cancelled_loans = 0;    // loans cancelled or dropped uncommitted
};

namespace detail {
struct Segment;
struct QueueHeader;
}  // namespace detail

class Queue {
 public:
  class Loan;
  class View;

  Queue() noexcept;
  Queue(Queue&&) noexcept;
  Queue& operator=(Queue&&) noexcept;
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;
  ~Queue();

  // A new named queue (a POSIX shared memory segment, EEXIST if the name is
  // taken), owned: removed when this object is destroyed.
  static Result<Queue> create(const std::string& name, QueueOptions options = {});
  // An existing named queue. A segment that is not a queue, of another
  // version, or whose header is corrupt is refused (EINVAL / bad_record);
  // one still being made is waited for up to `ready`.
  static Result<Queue> open(const std::string& name, Deadline ready = std::chrono::seconds(1));
  // A queue named nowhere (a memfd): shared with fork children, or with
  // another process by passing memory_fd() over a Unix socket (adopt()).
  static Result<Queue> anonymous(QueueOptions options = {});
  static Result<Queue> adopt(Fd memory);
  // Another participant on the same queue, for another thread.
  Result<Queue> another() const;

  bool valid() const noexcept { return p_ != nullptr; }
  // A named queue's creator removes the name now (if it still holds this
  // queue); everyone who has it goes on using it. Nothing for others.
  Result<void> remove();
  // The segment's descriptor (to pass to another process).
  int memory_fd() const noexcept;
  // "queue /jobs", "anonymous queue".
  const std::string& description() const noexcept;

  // Puts one whole message (1 to max_message bytes; an empty message is
  // allowed too). Blocks while the queue is full, until the deadline
  // (timed_out). Fails with broken_pipe once the queue is closed, EMSGSIZE
  // when the message is too large.
  Result<void> put(std::span<const std::byte> message, Deadline deadline = Deadline::never());
  Result<void> put(std::string_view text, Deadline deadline = Deadline::never()) {
    return put(std::as_bytes(std::span(text)), deadline);
  }
  // Never waits: would-block (EAGAIN) when full (Python's put_nowait).
  Result<void> try_put(std::span<const std::byte> message) {
    return put(message, Deadline::immediate());
  }
  template <class T>
  requires std::is_trivially_copyable_v<T> Result<void> put_value(
      const T& value, Deadline deadline = Deadline::never()) {
    return put(std::as_bytes(std::span(&value, 1)), deadline);
  }

  // Takes one message into `into`: its size. EMSGSIZE (and the message
  // stays queued) if it does not fit. Blocks while empty, until the
  // deadline; once the queue is closed and drained, end_of_stream.
  Result<std::size_t> get(std::span<std::byte> into, Deadline deadline = Deadline::never());
  Result<std::vector<std::byte>> get(Deadline deadline = Deadline::never());
  // Would-block (EAGAIN) when empty (Python's get_nowait).
  Result<std::vector<std::byte>> try_get() { return get(Deadline::immediate()); }
  // Into storage you keep (reused: no allocation for messages that fit).
  Result<void> get_into(std::vector<std::byte>& into, Deadline deadline = Deadline::never());
  Result<std::string> get_string(Deadline deadline = Deadline::never());
  template <class T>
  requires std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T> Result<T>
  get_value(Deadline deadline = Deadline::never()) {
    T value;
    auto ok = get_exactly(std::as_writable_bytes(std::span(&value, 1)), deadline);
    if (!ok) return std::unexpected(ok.error());
    return value;
  }
  // Takes the next message only if it is exactly into.size() bytes; one of
  // another size stays queued and the error (EBADMSG) says its size.
  Result<void> get_exactly(std::span<std::byte> into, Deadline deadline = Deadline::never());

  // Zero-copy: space for a message of up to `size` bytes, written in place
  // and then committed; or the next message, read in place and released.
  Result<Loan> loan(std::size_t size, Deadline deadline = Deadline::never());
  Result<View> get_view(Deadline deadline = Deadline::never());

  // Snapshots (others change them at once): messages queued (including
  // ones being written), and whether a put or get would wait now.
  std::size_t size() const noexcept;
  bool empty() const noexcept;
  bool full() const noexcept;
  std::size_t max_message() const noexcept;
  std::size_t capacity_bytes() const noexcept;
  std::size_t capacity_messages() const noexcept;
  // Bytes of shared memory the queue takes: header, participants, ring.
  std::size_t memory_bytes() const noexcept;

  // A descriptor for poll/epoll, this participant's (a datagram socket in
  // the abstract namespace, made on the first call): it becomes readable
  // when a try_get() or try_put() of this participant that found the queue
  // empty (full) may now succeed, or the queue closed; and, from the start,
  // when a message is queued. Use: poll for POLLIN, then try_ until
  // would-block (each would-block arms it again; a success drains it). No
  // system call is made for it while nobody polls.
  Result<int> fd();

  // No more puts (theirs fail with broken_pipe); gets drain what is queued,
  // then see end_of_stream. Wakes everyone waiting. For every participant.
  void close() noexcept;
  // On a close_on_death queue: count this participant as a producer (or a
  // consumer) now, before its first put (or get).
  Result<void> announce_producer();
  Result<void> announce_consumer();
  bool closed() const noexcept;

  // Python's JoinableQueue (every Queue is one): each message put is a
  // task; task_done() says one this participant got is finished (EINVAL
  // if it got no more than it has said done); join() waits until every
  // message put has been got and said done (timed_out at the deadline).
  // Call task_done on the participant that got the message: a consumer
  // that dies leaves its unfinished ones counted done, so that join()
  // does not wait for them forever (stats().tasks_dropped).
  Result<void> task_done();
  Result<void> join(Deadline deadline = Deadline::never());
  std::size_t unfinished_tasks() const noexcept;

  QueueStats stats() const noexcept;
  // Looks for dead participants now and undoes what they left (a wait that
  // they block does this by itself). Returns how many were found.
  Result<unsigned> recover();

  // The implementation's (src/queue/queue.cpp), named here only.
  struct Impl;
  explicit Queue(std::unique_ptr<Impl> p) noexcept;

 private:
  friend class Loan;
  friend class View;
  std::unique_ptr<Impl> p_;
};

// Python's name for a queue with task_done() and join(): every Queue is one.
using JoinableQueue = Queue;

// Space in the ring for one message, being written. commit() makes it a
// message; dropping it uncommitted (or cancel()) leaves nothing. It must
// not outlive its Queue.
class [[nodiscard]] Queue::Loan {
 public:
  Loan() noexcept = default;
  Loan(Loan&& other) noexcept
      : q_(std::exchange(other.q_, nullptr)), pos_(other.pos_), data_(other.data_) {}
  Loan& operator=(Loan&& other) noexcept;
  Loan(const Loan&) = delete;
  Loan& operator=(const Loan&) = delete;
  ~Loan() { cancel(); }

  std::span<std::byte> bytes() const noexcept { return data_; }
  std::byte* data() const noexcept { return data_.data(); }
  std::size_t size() const noexcept { return data_.size(); }
  // Publishes the first `used` bytes (all by default) as one message.
  Result<void> commit(std::size_t used);
  Result<void> commit() { return commit(data_.size()); }
  void cancel() noexcept;

 private:
  friend class Queue;
  Loan(Queue::Impl* q, std::uint64_t pos, std::span<std::byte> data) noexcept
      : q_(q), pos_(pos), data_(data) {}
  Queue::Impl* q_ = nullptr;
  std::uint64_t pos_ = 0;
  std::span<std::byte> data_;
};

// One message, read in place in the ring; its space is freed by release()
// (or when the View goes). It must not outlive its Queue.
class [[nodiscard]] Queue::View {
 public:
  View() noexcept = default;
  View(View&& other) noexcept
      : q_(std::exchange(other.q_, nullptr)), pos_(other.pos_), data_(other.data_) {}
  View& operator=(View&& other) noexcept;
  View(const View&) = delete;
  View& operator=(const View&) = delete;
  ~View() { release(); }

  std::span<const std::byte> bytes() const noexcept { return data_; }
  const std::byte* data() const noexcept { return data_.data(); }
  std::size_t size() const noexcept { return data_.size(); }
  std::string_view text() const noexcept {
    return {reinterpret_cast<const char*>(data_.data()), data_.size()};
  }
  void release() noexcept;

 private:
  friend class Queue;
  View(Queue::Impl* q, std::uint64_t pos, std::span<const std::byte> data) noexcept
      : q_(q), pos_(pos), data_(data) {}
  Queue::Impl* q_ = nullptr;
  std::uint64_t pos_ = 0;
  std::span<const std::byte> data_;
};

}  // namespace tether
