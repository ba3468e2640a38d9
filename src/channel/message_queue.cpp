#include "tether/channel/message_queue.hpp"

#include <fcntl.h>
#include <sys/msg.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "net.hpp"
#include "tether/sys/backoff.hpp"

namespace tether {

// ---------------------------------------------------------------- POSIX

Result<PosixQueue> PosixQueue::create(std::string name, PosixQueueOptions options) {
  if (auto ok = check_posix_ipc_name(name, "POSIX queue"); !ok) return std::unexpected(ok.error());
  mq_attr attr{};
  attr.mq_maxmsg = options.capacity;
  attr.mq_msgsize = options.message_size;
  // Blocking: see kExpired.
  mqd_t mq = ::mq_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, options.mode, &attr);
  if (mq < 0) {
    int err = errno;
    if (err == EMFILE) {
      // What the kernel reports when RLIMIT_MSGQUEUE, the per-user memory
      // for all queues (819200 bytes by default), would be exceeded.
      return fail(err,
                  fmt::format("create POSIX queue {} ({} x {} bytes): this user's queue memory "
                              "limit (RLIMIT_MSGQUEUE, ulimit -q) would be exceeded",
                              name, options.capacity, options.message_size));
    }
    if (err == EINVAL) {
      return fail(err,
                  fmt::format("create POSIX queue {} with capacity {} and message size {}: beyond "
                              "the system's limits (/proc/sys/fs/mqueue/msg_max, msgsize_max)",
                              name, options.capacity, options.message_size));
    }
    return fail(err, "create POSIX queue " + name);
  }
  PosixQueue q;
  q.mq_.reset(mq);
  q.object_ = NamedObject::posix(NamedObject::Kind::posix_queue, std::move(name), mq, true);
  // mq_open applies the umask (mq_open(3): "as for open(2)"), which can
  // only have narrowed the mode: widen it to exactly what was asked. The
  // queue is reached through its descriptor, not its name.
  if (::fchmod(mq, options.mode) != 0) return fail(errno, "set mode of POSIX queue " + q.name());
  q.message_size_ = options.message_size;
  return q;
}

Result<PosixQueue> PosixQueue::open(std::string name) {
  if (auto ok = check_posix_ipc_name(name, "POSIX queue"); !ok) return std::unexpected(ok.error());
  mqd_t mq = ::mq_open(name.c_str(), O_RDWR | O_CLOEXEC);  // blocking: see kExpired
  if (mq < 0) return fail(errno, "open POSIX queue " + name);
  PosixQueue q;
  q.mq_.reset(mq);
  q.object_ = NamedObject::posix(NamedObject::Kind::posix_queue, std::move(name), mq, false);
  auto attr = q.attributes();
  if (!attr) return std::unexpected(attr.error());
  q.message_size_ = attr->message_size;
  return q;
}

// Queue descriptors stay blocking, as sockets do. With Deadline::never() a
// call is one mq_send/mq_receive that sleeps in the kernel: one system call
// per message, not try + poll + try (Channel's mq transport measured the
// difference). With any other deadline each attempt is mq_timed*() with an
// already expired timeout, which never blocks (mq_send(3): "If the message
// queue is full, and the timeout has already expired by the time of the
// call, mq_timedsend() returns immediately"), and the wait between attempts
// is a poll(2) on the steady clock: mq_timed*()'s own timeout is an
// absolute CLOCK_REALTIME time, which jumps when the wall clock is set.
// Their ETIMEDOUT is would-block here (EAGAIN), as it is for a try_ form.
// (So nothing here turns a Deadline into an absolute timespec: the one
// kernel timeout passed is this constant, the epoch, always in the past.)
const timespec kExpired{0, 0};

Result<void> PosixQueue::send_impl(std::span<const std::byte> data, unsigned priority,
                                   Deadline deadline, bool once) const {
  if (static_cast<long>(data.size()) > message_size_) {
    return fail(EMSGSIZE,
                fmt::format("send on POSIX queue {}: a {}-byte message exceeds its message "
                            "size of {} bytes",
                            name(), data.size(), message_size_));
  }
  // An empty span may have no storage; mq_send's buffer must not be null.
  const char* bytes = data.empty() ? "" : reinterpret_cast<const char*>(data.data());
  bool block = !once && deadline.is_never();
  for (;;) {
    int r = retry_eintr([&] {
      return block ? ::mq_send(mq_.get(), bytes, data.size(), priority)
                   : ::mq_timedsend(mq_.get(), bytes, data.size(), priority, &kExpired);
    });
    if (r == 0) return {};
    int err = errno == ETIMEDOUT ? EAGAIN : errno;
    if (err != EAGAIN || once) return fail(err, "send on POSIX queue " + name());
    if (auto ready =
            detail::await_event(mq_.get(), POLLOUT, deadline, "room in POSIX queue ", name());
        !ready) {
      return ready;
    }
  }
}

Result<void> PosixQueue::try_send(std::span<const std::byte> data, unsigned priority) const {
  return send_impl(data, priority, Deadline::immediate(), true);
}

Result<void> PosixQueue::send(std::span<const std::byte> data, unsigned priority,
                              Deadline deadline) const {
  return send_impl(data, priority, deadline, false);
}

Result<std::size_t> PosixQueue::recv_impl(std::span<std::byte> buf, unsigned* priority,
                                          Deadline deadline, bool once) const {
  if (static_cast<long>(buf.size()) < message_size_) {
    // mq_receive refuses a buffer shorter than the queue's message size
    // (EMSGSIZE) even for a short message: say so before it does.
    return fail(EMSGSIZE, fmt::format("receive on POSIX queue {}: a {}-byte buffer is shorter "
                                      "than its message size of {} bytes",
                                      name(), buf.size(), message_size_));
  }
  char* bytes = reinterpret_cast<char*>(buf.data());
  bool block = !once && deadline.is_never();
  for (;;) {
    ssize_t n = retry_eintr([&] {
      return block ? ::mq_receive(mq_.get(), bytes, buf.size(), priority)
                   : ::mq_timedreceive(mq_.get(), bytes, buf.size(), priority, &kExpired);
    });
    if (n >= 0) return static_cast<std::size_t>(n);
    int err = errno == ETIMEDOUT ? EAGAIN : errno;
    if (err != EAGAIN || once) return fail(err, "receive on POSIX queue " + name());
    if (auto ready =
            detail::await_event(mq_.get(), POLLIN, deadline, "a message on POSIX queue ", name());
        !ready) {
      return std::unexpected(ready.error());
    }
  }
}

Result<std::size_t> PosixQueue::recv_into(std::span<std::byte> buf, Deadline deadline,
                                          unsigned* priority) const {
  return recv_impl(buf, priority, deadline, false);
}

Result<PosixMessage> PosixQueue::try_recv() const {
  PosixMessage m;
  m.data.resize(static_cast<std::size_t>(message_size_));
  auto n = recv_impl(m.data, &m.priority, Deadline::immediate(), true);
  if (!n) return std::unexpected(n.error());
  m.data.resize(*n);
  return m;
}

Result<PosixMessage> PosixQueue::recv(Deadline deadline) const {
  PosixMessage m;
  m.data.resize(static_cast<std::size_t>(message_size_));
  auto n = recv_impl(m.data, &m.priority, deadline, false);
  if (!n) return std::unexpected(n.error());
  m.data.resize(*n);
  return m;
}

Result<PosixQueue::Attributes> PosixQueue::attributes() const {
  mq_attr attr{};
  if (::mq_getattr(mq_.get(), &attr) != 0)
    return fail(errno, "get attributes of POSIX queue " + name());
  return Attributes{attr.mq_maxmsg, attr.mq_msgsize, attr.mq_curmsgs};
}

Result<void> PosixQueue::close() noexcept {
  if (auto r = mq_.close(); !r) return fail(r.error(), "close POSIX queue " + name());
  return {};
}

// ---------------------------------------------------------------- System V

std::size_t sysv_max_message() {
  // Read once: an ifstream on /proc per message cost more than the message.
  static const std::size_t value = [] {
    std::ifstream in("/proc/sys/kernel/msgmax");
    std::size_t v = 8192;  // the kernel's default (MSGMAX)
    in >> v;
    return v;
  }();
  return value;
}

namespace {

// msgsnd/msgrcv have no descriptor to poll: a deadline is kept by retrying
// IPC_NOWAIT with a backoff from 1 to 20 ms (Deadline::never() blocks in the
// kernel instead). Gives up with timed_out.
template <class Attempt>
auto with_backoff(Deadline deadline, Attempt attempt) -> decltype(attempt()) {
  Backoff backoff{std::chrono::milliseconds(1), std::chrono::milliseconds(20)};
  for (;;) {
    auto r = attempt();
    if (r || !would_block(r.error())) return r;
    if (!backoff.wait(deadline)) return fail(ETIMEDOUT, r.error().context());
  }
}

}  // namespace

Result<SysvQueue> SysvQueue::create(SysvKey key, mode_t mode) {
  // No umask here: msgget keeps the permission bits as given (ipc/msg.c,
  // newque: `msq->q_perm.mode = msgflg & S_IRWXUGO`).
  int id = ::msgget(key.get(), IPC_CREAT | IPC_EXCL | static_cast<int>(mode & 0777));
  if (id < 0) return fail(errno, "create System V queue with key " + key.describe());
  SysvQueue q;
  q.object_ = NamedObject::sysv(NamedObject::Kind::sysv_queue, id, key, true);
  return q;
}

Result<SysvQueue> SysvQueue::open(SysvKey key) {
  int id = ::msgget(key.get(), 0);
  if (id < 0) return fail(errno, "open System V queue with key " + key.describe());
  SysvQueue q;
  q.object_ = NamedObject::sysv(NamedObject::Kind::sysv_queue, id, key, false);
  return q;
}

SysvQueue SysvQueue::from_id(int id) noexcept {
  SysvQueue q;
  q.object_ = NamedObject::sysv(NamedObject::Kind::sysv_queue, id, std::nullopt, false);
  return q;
}

Result<void> SysvQueue::try_send(long type, std::span<const std::byte> data) const {
  std::vector<std::byte> scratch;
  return send_impl(type, data, Deadline::immediate(), true, scratch);
}

Result<void> SysvQueue::send(long type, std::span<const std::byte> data, Deadline deadline) const {
  std::vector<std::byte> scratch;
  return send_impl(type, data, deadline, false, scratch);
}

Result<void> SysvQueue::send_impl(long type, std::span<const std::byte> data, Deadline deadline,
                                  bool once, std::vector<std::byte>& scratch) const {
  int id = object_.id();
  if (type <= 0)
    return fail(EINVAL, fmt::format("send on System V queue {}: type {} must be > 0", id, type));
  std::size_t max = sysv_max_message();
  if (data.size() > max) {
    return fail(EMSGSIZE,
                fmt::format("send on System V queue {}: a {}-byte message exceeds the system's "
                            "maximum of {} bytes (/proc/sys/kernel/msgmax)",
                            id, data.size(), max));
  }
  // msgsnd(2) takes the type and the text in one buffer. resize() to a
  // size the buffer had before neither allocates nor fills.
  if (scratch.size() < sizeof(long) + data.size()) scratch.resize(sizeof(long) + data.size());
  std::memcpy(scratch.data(), &type, sizeof type);
  if (!data.empty()) std::memcpy(scratch.data() + sizeof(long), data.data(), data.size());
  auto attempt = [&](int flags) -> Result<void> {
    int r = retry_eintr([&] { return ::msgsnd(id, scratch.data(), data.size(), flags); });
    if (r != 0) return fail(errno, fmt::format("send on System V queue {}", id));
    return {};
  };
  if (once) return attempt(IPC_NOWAIT);
  if (deadline.is_never()) return attempt(0);
  return with_backoff(deadline, [&] { return attempt(IPC_NOWAIT); });
}

Result<SysvMessage> SysvQueue::try_recv(long type) const {
  return recv_message(type, Deadline::immediate(), true);
}

Result<SysvMessage> SysvQueue::recv(long type, Deadline deadline) const {
  return recv_message(type, deadline, false);
}

Result<SysvMessage> SysvQueue::recv_message(long type, Deadline deadline, bool once) const {
  std::vector<std::byte> scratch;
  auto n = recv_impl(type, deadline, once, scratch);
  if (!n) return std::unexpected(n.error());
  SysvMessage m;
  std::memcpy(&m.type, scratch.data(), sizeof(long));
  m.data.assign(scratch.begin() + sizeof(long),
                scratch.begin() + static_cast<std::ptrdiff_t>(sizeof(long) + *n));
  return m;
}

Result<std::size_t> SysvQueue::recv_impl(long type, Deadline deadline, bool once,
                                         std::vector<std::byte>& scratch) const {
  int id = object_.id();
  std::size_t max = sysv_max_message();
  if (scratch.size() < sizeof(long) + max) scratch.resize(sizeof(long) + max);
  auto attempt = [&](int flags) -> Result<std::size_t> {
    // No MSG_NOERROR: a message longer than the buffer is E2BIG, never cut.
    ssize_t n = retry_eintr([&] { return ::msgrcv(id, scratch.data(), max, type, flags); });
    if (n < 0) {
      int err = errno == ENOMSG ? EAGAIN : errno;  // IPC_NOWAIT, nothing of that type
      return fail(err, fmt::format("receive type {} on System V queue {}", type, id));
    }
    return static_cast<std::size_t>(n);
  };
  if (once) return attempt(IPC_NOWAIT);
  if (deadline.is_never()) return attempt(0);
  return with_backoff(deadline, [&] { return attempt(IPC_NOWAIT); });
}

Result<SysvQueue::Stats> SysvQueue::stats() const {
  msqid_ds ds{};
  if (::msgctl(object_.id(), IPC_STAT, &ds) != 0)
    return fail(errno, fmt::format("stat System V queue {}", object_.id()));
  return Stats{static_cast<std::size_t>(ds.msg_qnum), static_cast<std::size_t>(ds.__msg_cbytes),
               static_cast<std::size_t>(ds.msg_qbytes), ds.msg_lspid, ds.msg_lrpid};
}

}  // namespace tether
