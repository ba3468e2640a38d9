// System V semaphore sets (semget(2), semop(2), semctl(2)).
#include <sys/sem.h>

#include <chrono>
#include <iterator>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "tether/sync.hpp"
#include "tether/sys/backoff.hpp"

namespace tether {

namespace {

// semctl(2): "the calling program must define this union".
union semun {
  int val;
  semid_ds* buf;
  unsigned short* array;
};

std::string set_what(int id) {
  return fmt::format("System V semaphore set {}", id);
}

}  // namespace

Result<SysvSemaphores> SysvSemaphores::create(SysvKey key, std::span<const unsigned short> initial,
                                              mode_t mode) {
  std::string what = "System V semaphore set with key " + key.describe();
  if (initial.empty())
    return fail(EINVAL, "create " + what + ": a set holds at least one semaphore");
  if (initial.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    return fail(EINVAL, "create " + what + ": too many semaphores");
  int n = static_cast<int>(initial.size());
  int id = ::semget(key.get(), n, IPC_CREAT | IPC_EXCL | static_cast<int>(mode & 0777));
  if (id < 0) {
    int err = errno;
    if (err == EINVAL) {
      return fail(err, fmt::format("create {} of {} semaphores: beyond the system's limit on a "
                                   "set's size (SEMMSL in /proc/sys/kernel/sem)",
                                   what, n));
    }
    if (err == ENOSPC) {
      return fail(err, fmt::format("create {}: the system's limit on sets or semaphores (SEMMNI, "
                                   "SEMMNS in /proc/sys/kernel/sem) would be exceeded",
                                   what));
    }
    if (err == EEXIST) return fail(err, "create " + what + ": the key is taken");
    return fail(err, "create " + what);
  }
  SysvSemaphores s;
  s.object_ = NamedObject::sysv(NamedObject::Kind::sysv_semaphores, id, key, true);
  s.count_ = initial.size();
  if (auto ok = s.set_values(initial); !ok) return std::unexpected(ok.error());
  // A set is made in two steps (semget, then SETALL), so an opener could
  // see it before its values are set. semop sets sem_otime, which SETALL
  // does not: openers wait for it (Stevens, UNIX Network Programming vol. 2,
  // 11.2). +1 then -1 on semaphore 0 in one call changes nothing, or -1
  // then +1 when it is above 0 (+1 would pass SEMVMX at 32767).
  sembuf touch[2] = {{0, 1, 0}, {0, -1, 0}};
  if (initial[0] > 0) {
    touch[0].sem_op = -1;
    touch[1].sem_op = 1;
  }
  if (::semop(id, touch, 2) != 0) return fail(errno, "initialise " + set_what(id));
  return s;
}

Result<SysvSemaphores> SysvSemaphores::open(SysvKey key, Deadline ready) {
  std::string what = "System V semaphore set with key " + key.describe();
  if (key.is_private())
    return fail(EINVAL, "open " + what + ": a private set is reached only by its id (from_id)");
  int id = ::semget(key.get(), 0, 0);
  if (id < 0) return fail(errno, "open " + what);
  Backoff backoff(std::chrono::microseconds(100), std::chrono::milliseconds(10));
  for (;;) {
    semid_ds ds{};
    semun arg{};
    arg.buf = &ds;
    if (::semctl(id, 0, IPC_STAT, arg) != 0) return fail(errno, "open " + what);
    if (ds.sem_otime != 0) {
      SysvSemaphores s;
      s.object_ = NamedObject::sysv(NamedObject::Kind::sysv_semaphores, id, key, false);
      s.count_ = ds.sem_nsems;
      return s;
    }
    if (!backoff.wait(ready)) {
      return fail(ETIMEDOUT, "open " + what + ": its creator has not finished setting it up");
    }
  }
}

Result<SysvSemaphores> SysvSemaphores::from_id(int id) {
  semid_ds ds{};
  semun arg{};
  arg.buf = &ds;
  if (::semctl(id, 0, IPC_STAT, arg) != 0) return fail(errno, "open " + set_what(id));
  SysvSemaphores s;
  s.object_ = NamedObject::sysv(NamedObject::Kind::sysv_semaphores, id, std::nullopt, false);
  s.count_ = ds.sem_nsems;
  return s;
}

Result<void> SysvSemaphores::apply_impl(std::span<const Op> ops, Deadline deadline,
                                        bool once) const {
  // The object's description is made only for an error: a semop is some
  // 100 ns, and formatting it every time would double that.
  auto what = [&] { return set_what(id()); };
  if (!valid()) return fail(EINVAL, "operate on a System V semaphore set: none (moved from)");
  if (ops.empty()) return fail(EINVAL, "operate on " + what() + ": no operation given");
  constexpr std::size_t kMaxOps = 500;  // SEMOPM on Linux
  if (ops.size() > kMaxOps)
    return fail(E2BIG, fmt::format("operate on {}: {} operations, more than SEMOPM ({})", what(),
                                   ops.size(), kMaxOps));
  // Most calls apply one or two operations: a small buffer on the stack,
  // a vector past that (a 500-entry array on every call measured 5% slower).
  sembuf small[8];
  std::vector<sembuf> large;
  sembuf* buf = small;
  if (ops.size() > std::size(small)) {
    large.resize(ops.size());
    buf = large.data();
  }
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].index >= count_) {
      return fail(EFBIG, fmt::format("operate on {}: no semaphore {} in a set of {}", what(),
                                     ops[i].index, count_));
    }
    short flags = static_cast<short>((ops[i].undo ? SEM_UNDO : 0) | (once ? IPC_NOWAIT : 0));
    buf[i] = {ops[i].index, ops[i].delta, flags};
  }
  for (;;) {
    int r = 0;
    if (once || deadline.is_never()) {
      r = ::semop(id(), buf, ops.size());
    } else {
      // semtimedop's timeout is relative and measured on the monotonic
      // clock; recomputed from the deadline after each interruption.
      auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.remaining());
      timespec ts{static_cast<time_t>(left.count() / 1'000'000'000),
                  static_cast<long>(left.count() % 1'000'000'000)};
      r = ::semtimedop(id(), buf, ops.size(), &ts);
    }
    if (r == 0) return {};
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN && !once) {
      if (deadline.expired())
        return fail(ETIMEDOUT, "operate on " + what() + ": still waiting at the deadline");
      continue;  // woken early (a spurious EAGAIN): wait for the time left
    }
    return op_failed(err, once);
  }
}

Result<void> SysvSemaphores::op_failed(int err, bool once) const {
  std::string what = set_what(id());
  if (err == EAGAIN && once) return fail(EAGAIN, "operate on " + what + ": it would have to wait");
  if (err == EIDRM) return fail(err, "operate on " + what + ": removed while waiting");
  if (err == EINVAL)
    return fail(err, "operate on " + what + ": it does not exist (removed, or never made)");
  if (err == ERANGE) return fail(err, "operate on " + what + ": a value would pass SEMVMX (32767)");
  return fail(err, "operate on " + what);
}

std::unexpected<Error> SysvSemaphores::bad_count(std::string_view op, short count) const {
  return fail(EINVAL, fmt::format("{} {}: a count of {}; it must be at least 1", op, set_what(id()),
                                  count));
}

Result<int> SysvSemaphores::control(unsigned short index, int cmd, std::string_view what) const {
  if (index >= count_) {
    return fail(EFBIG, fmt::format("{} of {}: no semaphore {} in a set of {}", what, set_what(id()),
                                   index, count_));
  }
  int r = ::semctl(id(), index, cmd);
  if (r < 0)
    return fail(errno, fmt::format("{} of semaphore {} of {}", what, index, set_what(id())));
  return r;
}

Result<int> SysvSemaphores::value(unsigned short index) const {
  return control(index, GETVAL, "read the value");
}
Result<int> SysvSemaphores::waiting(unsigned short index) const {
  return control(index, GETNCNT, "count the waiters");
}
Result<int> SysvSemaphores::waiting_zero(unsigned short index) const {
  return control(index, GETZCNT, "count the waiters for zero");
}
Result<pid_t> SysvSemaphores::last_pid(unsigned short index) const {
  auto r = control(index, GETPID, "read the last process");
  if (!r) return std::unexpected(r.error());
  return static_cast<pid_t>(*r);
}

Result<void> SysvSemaphores::set_value(unsigned short index, int value) const {
  if (index >= count_) {
    return fail(EFBIG, fmt::format("set a value of {}: no semaphore {} in a set of {}",
                                   set_what(id()), index, count_));
  }
  semun arg{};
  arg.val = value;
  if (::semctl(id(), index, SETVAL, arg) != 0) {
    return fail(errno, fmt::format("set semaphore {} of {} to {}", index, set_what(id()), value));
  }
  return {};
}

Result<std::vector<unsigned short>> SysvSemaphores::values() const {
  std::vector<unsigned short> v(count_);
  semun arg{};
  arg.array = v.data();
  if (::semctl(id(), 0, GETALL, arg) != 0)
    return fail(errno, "read the values of " + set_what(id()));
  return v;
}

Result<void> SysvSemaphores::set_values(std::span<const unsigned short> values) const {
  if (values.size() != count_) {
    return fail(EINVAL, fmt::format("set the values of {}: {} values for {} semaphores",
                                    set_what(id()), values.size(), count_));
  }
  std::vector<unsigned short> v(values.begin(), values.end());
  semun arg{};
  arg.array = v.data();
  if (::semctl(id(), 0, SETALL, arg) != 0) {
    int err = errno;
    if (err == ERANGE)
      return fail(err, "set the values of " + set_what(id()) + ": a value passes SEMVMX (32767)");
    return fail(err, "set the values of " + set_what(id()));
  }
  return {};
}

Result<SysvSemaphores::Stats> SysvSemaphores::stats() const {
  semid_ds ds{};
  semun arg{};
  arg.buf = &ds;
  if (::semctl(id(), 0, IPC_STAT, arg) != 0)
    return fail(errno, "read the state of " + set_what(id()));
  Stats s;
  s.count = ds.sem_nsems;
  s.owner = ds.sem_perm.uid;
  s.mode = static_cast<mode_t>(ds.sem_perm.mode & 0777);
  return s;
}

}  // namespace tether
