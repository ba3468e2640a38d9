#include "tether/channel/message_queue.hpp"

#include <fcntl.h>
#include <sys/msg.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include "net.hpp"

namespace tether {

namespace {

Result<void> check_posix_name(const std::string& name) {
  if (name.size() < 2 || name[0] != '/' || name.find('/', 1) != std::string::npos ||
      name.size() > NAME_MAX) {
    return fail(EINVAL,
                fmt::format("POSIX queue name '{}': must be '/' followed by 1 to {} characters, "
                            "no other '/'",
                            name, NAME_MAX - 1));
  }
  return {};
}

}  // namespace

// ---------------------------------------------------------------- POSIX

PosixQueue::PosixQueue(PosixQueue&& other) noexcept
    : mq_(std::exchange(other.mq_, -1)),
      name_(std::move(other.name_)),
      message_size_(other.message_size_),
      owned_(std::exchange(other.owned_, false)) {}

PosixQueue& PosixQueue::operator=(PosixQueue&& other) noexcept {
  if (this != &other) {
    if (owned_) (void)unlink();
    (void)close();
    mq_ = std::exchange(other.mq_, -1);
    name_ = std::move(other.name_);
    message_size_ = other.message_size_;
    owned_ = std::exchange(other.owned_, false);
  }
  return *this;
}

PosixQueue::~PosixQueue() {
  if (owned_) (void)unlink();
  (void)close();
}

Result<PosixQueue> PosixQueue::create(std::string name, PosixQueueOptions options) {
  if (auto ok = check_posix_name(name); !ok) return std::unexpected(ok.error());
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
  q.mq_ = mq;
  q.name_ = std::move(name);
  q.owned_ = true;
  // mq_open applies the umask (mq_open(3): "as for open(2)"), which can
  // only have narrowed the mode: widen it to exactly what was asked. The
  // queue is reached through its descriptor, not its name.
  if (::fchmod(mq, options.mode) != 0) return fail(errno, "set mode of POSIX queue " + q.name_);
  q.message_size_ = options.message_size;
  return q;
}

Result<PosixQueue> PosixQueue::open(std::string name) {
  if (auto ok = check_posix_name(name); !ok) return std::unexpected(ok.error());
  mqd_t mq = ::mq_open(name.c_str(), O_RDWR | O_CLOEXEC);  // blocking: see kExpired
  if (mq < 0) return fail(errno, "open POSIX queue " + name);
  PosixQueue q;
  q.mq_ = mq;
  q.name_ = std::move(name);
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
const timespec kExpired{0, 0};

Result<void> PosixQueue::send_impl(std::span<const std::byte> data, unsigned priority,
                                   Deadline deadline, bool once) const {
  if (static_cast<long>(data.size()) > message_size_) {
    return fail(EMSGSIZE,
                fmt::format("send on POSIX queue {}: a {}-byte message exceeds its message "
                            "size of {} bytes",
                            name_, data.size(), message_size_));
  }
  // An empty span may have no storage; mq_send's buffer must not be null.
  const char* bytes = data.empty() ? "" : reinterpret_cast<const char*>(data.data());
  bool block = !once && deadline.is_never();
  for (;;) {
    int r = retry_eintr([&] {
      return block ? ::mq_send(mq_, bytes, data.size(), priority)
                   : ::mq_timedsend(mq_, bytes, data.size(), priority, &kExpired);
    });
    if (r == 0) return {};
    int err = errno == ETIMEDOUT ? EAGAIN : errno;
    if (err != EAGAIN || once) return fail(err, "send on POSIX queue " + name_);
    if (auto ready = detail::await_event(mq_, POLLOUT, deadline, "room in POSIX queue ", name_);
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
                                      name_, buf.size(), message_size_));
  }
  char* bytes = reinterpret_cast<char*>(buf.data());
  bool block = !once && deadline.is_never();
  for (;;) {
    ssize_t n = retry_eintr([&] {
      return block ? ::mq_receive(mq_, bytes, buf.size(), priority)
                   : ::mq_timedreceive(mq_, bytes, buf.size(), priority, &kExpired);
    });
    if (n >= 0) return static_cast<std::size_t>(n);
    int err = errno == ETIMEDOUT ? EAGAIN : errno;
    if (err != EAGAIN || once) return fail(err, "receive on POSIX queue " + name_);
    if (auto ready = detail::await_event(mq_, POLLIN, deadline, "a message on POSIX queue ", name_);
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
  if (::mq_getattr(mq_, &attr) != 0) return fail(errno, "get attributes of POSIX queue " + name_);
  return Attributes{attr.mq_maxmsg, attr.mq_msgsize, attr.mq_curmsgs};
}

Result<void> PosixQueue::unlink() {
  owned_ = false;
  if (::mq_unlink(name_.c_str()) != 0) return fail(errno, "unlink POSIX queue " + name_);
  return {};
}

Result<void> PosixQueue::close() noexcept {
  mqd_t mq = std::exchange(mq_, -1);
  if (mq >= 0 && ::mq_close(mq) != 0) return fail(errno, "close POSIX queue " + name_);
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
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    auto r = attempt();
    if (r || !would_block(r.error())) return r;
    if (deadline.expired()) return fail(ETIMEDOUT, r.error().context());
    std::this_thread::sleep_for(std::min<Deadline::clock::duration>(pause, deadline.remaining()));
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
}

}  // namespace

SysvQueue::SysvQueue(SysvQueue&& other) noexcept
    : id_(std::exchange(other.id_, -1)), owned_(std::exchange(other.owned_, false)) {}

SysvQueue& SysvQueue::operator=(SysvQueue&& other) noexcept {
  if (this != &other) {
    if (owned_) (void)remove();
    id_ = std::exchange(other.id_, -1);
    owned_ = std::exchange(other.owned_, false);
  }
  return *this;
}

SysvQueue::~SysvQueue() {
  if (owned_) (void)remove();
}

Result<key_t> SysvQueue::key_from_path(const std::filesystem::path& path, int project_id) {
  if (project_id < 1 || project_id > 255) {
    return fail(EINVAL, fmt::format("key from {}: project id {} is not in 1..255", path.string(),
                                    project_id));
  }
  key_t key = ::ftok(path.c_str(), project_id);
  if (key == -1) return fail(errno, "key from " + path.string());
  return key;
}

Result<SysvQueue> SysvQueue::create(key_t key, mode_t mode) {
  // No umask here: msgget keeps the permission bits as given (ipc/msg.c,
  // newque: `msq->q_perm.mode = msgflg & S_IRWXUGO`).
  int id = ::msgget(key, IPC_CREAT | IPC_EXCL | static_cast<int>(mode & 0777));
  if (id < 0) return fail(errno, fmt::format("create System V queue with key {:#x}", key));
  SysvQueue q;
  q.id_ = id;
  q.owned_ = true;
  return q;
}

Result<SysvQueue> SysvQueue::open(key_t key) {
  int id = ::msgget(key, 0);
  if (id < 0) return fail(errno, fmt::format("open System V queue with key {:#x}", key));
  return from_id(id);
}

SysvQueue SysvQueue::from_id(int id) noexcept {
  SysvQueue q;
  q.id_ = id;
  return q;
}

Result<void> SysvQueue::try_send(long type, std::span<const std::byte> data) const {
  return send_impl(type, data, Deadline::immediate(), true);
}

Result<void> SysvQueue::send(long type, std::span<const std::byte> data, Deadline deadline) const {
  return send_impl(type, data, deadline, false);
}

Result<void> SysvQueue::send_impl(long type, std::span<const std::byte> data, Deadline deadline,
                                  bool once) const {
  if (type <= 0)
    return fail(EINVAL, fmt::format("send on System V queue {}: type {} must be > 0", id_, type));
  std::size_t max = sysv_max_message();
  if (data.size() > max) {
    return fail(EMSGSIZE,
                fmt::format("send on System V queue {}: a {}-byte message exceeds the system's "
                            "maximum of {} bytes (/proc/sys/kernel/msgmax)",
                            id_, data.size(), max));
  }
  std::vector<std::byte> buf(sizeof(long) + data.size());
  std::memcpy(buf.data(), &type, sizeof type);
  if (!data.empty()) std::memcpy(buf.data() + sizeof(long), data.data(), data.size());
  auto attempt = [&](int flags) -> Result<void> {
    int r = retry_eintr([&] { return ::msgsnd(id_, buf.data(), data.size(), flags); });
    if (r != 0) return fail(errno, fmt::format("send on System V queue {}", id_));
    return {};
  };
  if (once) return attempt(IPC_NOWAIT);
  if (deadline.is_never()) return attempt(0);
  return with_backoff(deadline, [&] { return attempt(IPC_NOWAIT); });
}

Result<SysvMessage> SysvQueue::try_recv(long type) const {
  return recv_impl(type, Deadline::immediate(), true);
}

Result<SysvMessage> SysvQueue::recv(long type, Deadline deadline) const {
  return recv_impl(type, deadline, false);
}

Result<SysvMessage> SysvQueue::recv_impl(long type, Deadline deadline, bool once) const {
  std::size_t max = sysv_max_message();
  std::vector<std::byte> buf(sizeof(long) + max);
  auto attempt = [&](int flags) -> Result<SysvMessage> {
    // No MSG_NOERROR: a message longer than the buffer is E2BIG, never cut.
    ssize_t n = retry_eintr([&] { return ::msgrcv(id_, buf.data(), max, type, flags); });
    if (n < 0) {
      int err = errno == ENOMSG ? EAGAIN : errno;  // IPC_NOWAIT, nothing of that type
      return fail(err, fmt::format("receive type {} on System V queue {}", type, id_));
    }
    SysvMessage m;
    std::memcpy(&m.type, buf.data(), sizeof(long));
    m.data.assign(buf.begin() + sizeof(long),
                  buf.begin() + static_cast<std::ptrdiff_t>(sizeof(long) + n));
    return m;
  };
  if (once) return attempt(IPC_NOWAIT);
  if (deadline.is_never()) return attempt(0);
  return with_backoff(deadline, [&] { return attempt(IPC_NOWAIT); });
}

Result<SysvQueue::Stats> SysvQueue::stats() const {
  msqid_ds ds{};
  if (::msgctl(id_, IPC_STAT, &ds) != 0)
    return fail(errno, fmt::format("stat System V queue {}", id_));
  return Stats{static_cast<std::size_t>(ds.msg_qnum), static_cast<std::size_t>(ds.__msg_cbytes),
               static_cast<std::size_t>(ds.msg_qbytes), ds.msg_lspid, ds.msg_lrpid};
}

Result<void> SysvQueue::remove() {
  owned_ = false;
  if (::msgctl(id_, IPC_RMID, nullptr) != 0)
    return fail(errno, fmt::format("remove System V queue {}", id_));
  return {};
}

}  // namespace tether
