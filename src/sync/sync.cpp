// Mutex, Condition, Event, HolderSemaphore, Barrier, POSIX semaphores.
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>

#include <fmt/format.h>

#include "futex.hpp"
#include "tether/sync.hpp"

namespace tether {

namespace detail {

std::atomic<std::uint64_t> process_pid_namespace{0};

namespace {

long futex_call(const void* addr, int op, std::uint32_t val, const timespec* ts,
                std::uint32_t val3) noexcept {
  return ::syscall(SYS_futex, addr, op, val, ts, nullptr, val3);
}

}  // namespace

Result<void> futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                        Deadline deadline) {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  auto at = deadline.absolute(CLOCK_MONOTONIC);
  // FUTEX_WAIT_BITSET takes an absolute time, on CLOCK_MONOTONIC unless
  // FUTEX_CLOCK_REALTIME is set: a deadline that the wall clock cannot move.
  long r =
      futex_call(&word, FUTEX_WAIT_BITSET, expected, at ? &*at : nullptr, FUTEX_BITSET_MATCH_ANY);
  if (r == 0 || errno == EAGAIN || errno == EINTR) return {};
  if (errno == ETIMEDOUT) return fail(ETIMEDOUT, "wait");
  return fail(errno, "futex wait");
}

void futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept {
  (void)futex_call(&word, FUTEX_WAKE, static_cast<std::uint32_t>(count), nullptr, 0);
}

std::atomic<std::uint32_t>& lock_word(Mutex& m) noexcept {
  static_assert(offsetof(pthread_mutex_t, __data.__lock) == 0);
  static_assert(sizeof(m.native()->__data.__lock) == sizeof(std::uint32_t));
  return *reinterpret_cast<std::atomic<std::uint32_t>*>(&m.native()->__data.__lock);
}

Result<void> wait_for_leases(std::span<Mutex* const> leases, const std::atomic<std::uint32_t>* word,
                             std::uint32_t expected, bool skip_free, Deadline deadline) {
  futex_waitv waiters[LeaseTable::kMax + 1] = {};
  unsigned n = 0;
  if (word != nullptr) {
    waiters[n++] = {expected, reinterpret_cast<std::uint64_t>(word), FUTEX_32, 0};
  }
  for (Mutex* m : leases) {
    auto& w = lock_word(*m);
    std::uint32_t v = w.load(std::memory_order_acquire);
    for (;;) {
      if (v == 0 && skip_free) break;
      if (v == 0 || (v & FUTEX_OWNER_DIED) != 0) return {};  // the caller takes it
      if ((v & FUTEX_WAITERS) != 0) break;
      if (w.compare_exchange_weak(v, v | FUTEX_WAITERS, std::memory_order_acq_rel)) {
        v |= FUTEX_WAITERS;
        break;
      }
    }
    if (v == 0) continue;
    waiters[n++] = {v, reinterpret_cast<std::uint64_t>(&w), FUTEX_32, 0};
  }
  if (n == 0) {
    // Nothing to watch: sleep until the deadline.
    std::atomic<std::uint32_t> never{0};
    return futex_wait(never, 0, deadline);
  }
  auto at = deadline.absolute(CLOCK_MONOTONIC);
  long r = ::syscall(SYS_futex_waitv, waiters, n, 0, at ? &*at : nullptr, CLOCK_MONOTONIC);
  if (r >= 0 || errno == EAGAIN || errno == EINTR) return {};
  if (errno == ETIMEDOUT) return fail(ETIMEDOUT, "wait");
  if (errno == ENOSYS) {
    // Before Linux 5.16: nap, then the caller looks again.
    Deadline nap = min(deadline, Deadline(std::chrono::milliseconds(1)));
    std::atomic<std::uint32_t> never{0};
    auto slept = futex_wait(never, 0, nap);
    if (!slept && deadline.expired()) return slept;
    return {};
  }
  return fail(errno, "futex_waitv");
}

}  // namespace detail

namespace {

using detail::futex_wait;
using detail::futex_wake;

// A leased participant looks again at least this often even if no wake-up
// came: a safety net for a wake-up the kernel gave to a waiter that then
// gave up, never the way deaths are normally seen.
constexpr auto kRecheck = std::chrono::milliseconds(100);

// detail::process_pid_namespace: the inode of this process's PID namespace
// (/proc/self/ns/pid), 0 if unknown. Read once per process and kept: a lock checks it on every
// call, so the check costs a load. A fork child may be in another namespace (after
// unshare(CLONE_NEWPID), a parent's children are), so the value is forgotten in every fork child
// (pthread_atfork) and read again there.
std::uint64_t read_pid_namespace() noexcept {
  struct stat st {};
  if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_ino);
}

std::uint64_t current_pid_namespace() noexcept {
  auto& g_pid_ns = detail::process_pid_namespace;
  std::uint64_t ns = g_pid_ns.load(std::memory_order_relaxed);
  if (ns != 0) [[likely]]
    return ns;
  static const bool forget_in_children = [] {
    ::pthread_atfork(nullptr, nullptr,
                     [] { detail::process_pid_namespace.store(0, std::memory_order_relaxed); });
    return true;
  }();
  (void)forget_in_children;
  ns = read_pid_namespace();
  g_pid_ns.store(ns, std::memory_order_relaxed);
  return ns;
}

// ETIMEDOUT in the system category, as every other deadline in tether
// reports it: equal to std::errc::timed_out, and "(ETIMEDOUT)" in messages.
std::unexpected<Error> timed_out(std::string what) {
  return fail(ETIMEDOUT, std::move(what));
}

}  // namespace

// ---------------------------------------------------------------- Mutex

Mutex::Mutex(Kind kind) noexcept : m_(), pid_ns_(current_pid_namespace()), kind_(kind) {
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  ::pthread_mutexattr_settype(
      &attr, kind == Kind::recursive ? PTHREAD_MUTEX_RECURSIVE : PTHREAD_MUTEX_ERRORCHECK);
  // glibc's pthread_mutex_init cannot fail for these attributes (it only
  // checks for PI and priority-protect support).
  ::pthread_mutex_init(&m_, &attr);
  ::pthread_mutexattr_destroy(&attr);
}

bool Mutex::same_pid_namespace() const noexcept {
  if (pid_ns_ == 0) return true;  // /proc was not mounted at creation: cannot tell
  std::uint64_t here = current_pid_namespace();
  return here == 0 || here == pid_ns_;
}

Result<MutexGuard> Mutex::finish(int r, const char* op) {
  switch (r) {
    case 0:
      return MutexGuard(this, false);
    case EOWNERDEAD:
      return MutexGuard(this, true);
    case ENOTRECOVERABLE:
      return fail(errc::not_recoverable, fmt::format("{} a Mutex", op));
    case ETIMEDOUT:
      return timed_out(fmt::format("{} a Mutex: still held at the deadline", op));
    case EBUSY:
      return fail(EAGAIN, fmt::format("{} a Mutex: held by another thread", op));
    case EDEADLK:
      return fail(EDEADLK, fmt::format("{} a Mutex: this thread holds it already", op));
    default:
      return fail(r, fmt::format("{} a Mutex", op));
  }
}

namespace {

// glibc's mark of a robust mutex that is not recoverable (nptl/pthreadP.h:
// PTHREAD_MUTEX_NOTRECOVERABLE, INT_MAX - 1, in __data.__owner). The state
// is final. It is checked before calling glibc because glibc 2.36's
// pthread_mutex_trylock, on such a mutex, returns ENOTRECOVERABLE but
// leaves the lock word holding the caller's thread id (it unlocks only
// `if (oldval == id)`): every later lock, in every process, then waits for
// a holder that does not exist. Measured here; lock() itself unlocks.
static_assert(INT_MAX - 1 == 0x7fffffff - 1);

bool not_recoverable(const pthread_mutex_t& m) noexcept {
  return __atomic_load_n(&m.__data.__owner, __ATOMIC_RELAXED) == INT_MAX - 1;
}

}  // namespace

namespace {

// glibc's kind bits of a mutex made by Mutex's constructor (nptl's
// PTHREAD_MUTEX_ROBUST_NORMAL_NP and PTHREAD_MUTEX_PSHARED_BIT). A Mutex
// viewed in memory where none was constructed (zeros, say) would
// otherwise be a plain process-private mutex that never reports a death.
constexpr int kRobustBit = 16, kPsharedBit = 128;

bool constructed(const pthread_mutex_t& m) noexcept {
  int kind = __atomic_load_n(&m.__data.__kind, __ATOMIC_RELAXED);
  return (kind & kRobustBit) != 0 && (kind & kPsharedBit) != 0;
}

}  // namespace

// A waiter for a robust mutex never sleeps in glibc for longer than this;
// then it looks at the lock word again. The reason is a wake-up lost to a
// death. An unlock that sees waiters wakes one. If that one is killed
// before it takes the lock, and meanwhile a thread that did not have to
// wait takes it (glibc then leaves the waiters bit off), the word says
// "nobody waits" while others sleep on it: no later unlock wakes them, and
// the kernel's repair for a dead thread's pending lock (it wakes someone)
// applies only if the word is still 0 when the thread dies. Found by
// tether_stress_sync; Sync.MutexWaiterWhoseWakeUpWentToADeadWaiterStill-
// GetsTheLock builds the state. Looking again costs a sleeping waiter one
// futex call per slice; a stranded one waits a slice at most.
constexpr auto kLockSlice = std::chrono::milliseconds(10);

namespace {

#if defined(__SANITIZE_THREAD__)
constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool kThreadSanitizer = true;
#else
constexpr bool kThreadSanitizer = false;
#endif
#else
constexpr bool kThreadSanitizer = false;
#endif

// pthread_mutex_clocklock on the monotonic clock. ThreadSanitizer (GCC
// 12's) intercepts pthread_mutex_timedlock but not clocklock, and would
// not see the mutex taken: under it the slice is timed on CLOCK_REALTIME
// instead (a step of the wall clock then lengthens that one slice, which a
// test build can live with).
int lock_until(pthread_mutex_t* m, Deadline at) noexcept {
  if constexpr (kThreadSanitizer) {
    auto ts = at.absolute(CLOCK_REALTIME);
    return ::pthread_mutex_timedlock(m, &*ts);
  } else {
    auto ts = at.absolute(CLOCK_MONOTONIC);
    return ::pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &*ts);
  }
}

}  // namespace

int Mutex::lock_in_slices(Deadline deadline) noexcept {
  for (;;) {
    int r = lock_until(&m_, min(deadline, Deadline(kLockSlice)));
    if (r != ETIMEDOUT || deadline.expired()) return r;
  }
}

Result<MutexGuard> Mutex::lock_checked(Deadline deadline) {
  if (!constructed(m_)) [[unlikely]]
    return fail(EINVAL, "lock a Mutex: none was constructed there (or it was overwritten)");
  if (!same_pid_namespace()) [[unlikely]]
    return fail(errc::foreign_pid_namespace, "lock a Mutex");
  if (not_recoverable(m_)) return finish(ENOTRECOVERABLE, "lock");
  return finish(lock_in_slices(deadline), "lock");
}

Result<MutexGuard> Mutex::lock_contended(int trylock_result) {
  if (trylock_result == EOWNERDEAD) return MutexGuard(this, true);
  if (trylock_result == ENOTRECOVERABLE) {
    undo_failed_trylock();
    return finish(ENOTRECOVERABLE, "lock");
  }
  return lock_checked(Deadline::never());
}

void Mutex::undo_failed_trylock() noexcept {
  // glibc 2.36's trylock of a mutex that became not recoverable leaves our
  // thread id in the lock word (see above): put it back to free, and wake
  // anyone who started to wait on it.
  auto& word = detail::lock_word(*this);
  std::uint32_t v = word.load(std::memory_order_relaxed);
  auto tid = static_cast<std::uint32_t>(::gettid());
  while ((v & FUTEX_TID_MASK) == tid && !word.compare_exchange_weak(v, 0)) {
  }
  if ((v & FUTEX_TID_MASK) == tid && (v & FUTEX_WAITERS) != 0) futex_wake(word, INT_MAX);
}

Result<MutexGuard> Mutex::try_lock() {
  if (!constructed(m_)) [[unlikely]]
    return fail(EINVAL, "try to lock a Mutex: none was constructed there (or it was overwritten)");
  if (!same_pid_namespace()) [[unlikely]]
    return fail(errc::foreign_pid_namespace, "try to lock a Mutex");
  if (not_recoverable(m_)) return finish(ENOTRECOVERABLE, "try to lock");
  int r = ::pthread_mutex_trylock(&m_);
  // It may have become not recoverable between the check above and glibc's
  // call.
  if (r == ENOTRECOVERABLE) undo_failed_trylock();
  return finish(r, "try to lock");
}

MutexGuard& MutexGuard::operator=(MutexGuard&& other) noexcept {
  if (this != &other) {
    (void)unlock();
    mutex_ = std::exchange(other.mutex_, nullptr);
    owner_died_ = other.owner_died_;
  }
  return *this;
}

Result<void> MutexGuard::mark_consistent() {
  if (mutex_ == nullptr) return fail(EPERM, "mark a Mutex consistent: the guard holds none");
  if (!owner_died_) return {};
  int r = ::pthread_mutex_consistent(mutex_->native());
  if (r != 0) return fail(r, "mark a Mutex consistent");
  owner_died_ = false;
  return {};
}

Result<void> MutexGuard::unlock() {
  if (mutex_ == nullptr) return {};
  Mutex* m = std::exchange(mutex_, nullptr);
  int r = ::pthread_mutex_unlock(m->native());
  if (r != 0) return fail(r, "unlock a Mutex");
  return {};
}

// ---------------------------------------------------------------- Condition

Result<void> Condition::wait(MutexGuard& guard, Deadline deadline) {
  if (!guard.owns_lock()) return fail(EPERM, "wait on a Condition: the guard holds no Mutex");
  if (guard.owner_died()) {
    // Unlocking would make the mutex not recoverable for everyone.
    return fail(EINVAL,
                "wait on a Condition: the Mutex's previous holder died; repair the data and "
                "mark_consistent() first");
  }
  // Announce a sleeper before letting go of the mutex: a notifier that
  // changes the predicate after this sees the bit and wakes us, and the
  // value we sleep on has moved if it already did.
  std::uint32_t seen = seq_.fetch_or(1, std::memory_order_acq_rel) | 1;
  Mutex* m = guard.mutex_;
  if (int r = ::pthread_mutex_unlock(m->native()); r != 0) return fail(r, "wait on a Condition");
  auto slept = futex_wait(seq_, seen, deadline);
  int r = m->lock_in_slices(Deadline::never());
  if (r == EOWNERDEAD) {
    guard.owner_died_ = true;
  } else if (r != 0) {
    guard.mutex_ = nullptr;
    if (r == ENOTRECOVERABLE)
      return fail(errc::not_recoverable, "lock a Mutex again after waiting on a Condition");
    return fail(r, "lock a Mutex again after waiting on a Condition");
  }
  if (!slept) {
    if (slept.error() == std::errc::timed_out)
      return timed_out("wait on a Condition: not notified by the deadline");
    return fail(slept.error(), "wait on a Condition");
  }
  return {};
}

void Condition::notify(int count) noexcept {
  std::uint32_t s = seq_.load(std::memory_order_acquire);
  for (;;) {
    if ((s & 1) == 0) return;  // nobody between announcing and sleeping: no system call
    // notify_all clears the bit (every sleeper wakes, and sets it again if
    // it sleeps again); notify_one keeps it, unless it woke nobody.
    std::uint32_t next = count == INT_MAX ? (s + 2) & ~1u : s + 2;
    if (seq_.compare_exchange_weak(s, next, std::memory_order_acq_rel)) {
      long woken = ::syscall(SYS_futex, &seq_, FUTEX_WAKE, count, nullptr, nullptr, 0);
      if (woken == 0 && count != INT_MAX) {
        // Nobody asleep (they all died, or all woke already): stop paying
        // for the system call on the next notify.
        std::uint32_t expect = next;
        seq_.compare_exchange_strong(expect, next & ~1u, std::memory_order_acq_rel);
      }
      return;
    }
  }
}

void Condition::notify_one() noexcept {
  notify(1);
}
void Condition::notify_all() noexcept {
  notify(INT_MAX);
}

// ---------------------------------------------------------------- Event

void Event::set() noexcept {
  std::uint32_t old = state_.load(std::memory_order_relaxed);
  while (!state_.compare_exchange_weak(old, ((old | kSet) & ~kWaiters) + kGeneration,
                                       std::memory_order_acq_rel)) {
  }
  if ((old & kWaiters) != 0) futex_wake(state_, INT_MAX);
}

void Event::clear() noexcept {
  state_.fetch_and(~kSet, std::memory_order_acq_rel);
}

Result<void> Event::wait(Deadline deadline) const {
  const std::uint32_t generation = state_.load(std::memory_order_acquire) / kGeneration;
  for (;;) {
    std::uint32_t s = state_.load(std::memory_order_acquire);
    if ((s & kSet) != 0 || s / kGeneration != generation) return {};
    if ((s & kWaiters) == 0 &&
        !state_.compare_exchange_weak(s, s | kWaiters, std::memory_order_acq_rel)) {
      continue;
    }
    if (auto r = futex_wait(state_, s | kWaiters, deadline); !r) {
      std::uint32_t now = state_.load(std::memory_order_acquire);
      if ((now & kSet) != 0 || now / kGeneration != generation) return {};
      if (r.error() == std::errc::timed_out)
        return timed_out("wait for an Event: not set by the deadline");
      return fail(r.error(), "wait for an Event");
    }
  }
}

// ---------------------------------------------------------------- HolderSemaphore

namespace {
constexpr std::uint32_t kHolderMagic = 0x74685331;   // "thS1"
constexpr std::uint32_t kBarrierMagic = 0x74684231;  // "thB1"
}  // namespace

HolderSemaphore::HolderSemaphore(unsigned permits) noexcept
    : magic_(kHolderMagic), permits_(permits) {}

Result<void> HolderSemaphore::check() const {
  if (magic_ != kHolderMagic)
    return fail(EINVAL,
                "use a HolderSemaphore: none was constructed there (or it was overwritten)");
  if (permits_ < 1 || permits_ > max_permits) {
    return fail(EINVAL, fmt::format("use a HolderSemaphore of {} permits: it takes 1 to {}",
                                    permits_, max_permits));
  }
  return {};
}

HolderSemaphore::Permit& HolderSemaphore::Permit::operator=(Permit&& other) noexcept {
  if (this != &other) {
    release();
    slot_ = std::exchange(other.slot_, nullptr);
    holder_died_ = other.holder_died_;
  }
  return *this;
}

void HolderSemaphore::Permit::release() noexcept {
  if (slot_ == nullptr) return;
  // glibc's unlock wakes one sleeper if a waiter marked the word.
  ::pthread_mutex_unlock(std::exchange(slot_, nullptr)->native());
}

Result<HolderSemaphore::Permit> HolderSemaphore::take(bool wait, Deadline deadline) {
  if (auto ok = check(); !ok) return std::unexpected(ok.error());
  if (!leases_.slot[0].same_pid_namespace())
    return fail(errc::foreign_pid_namespace, "take a permit of a HolderSemaphore");
  // Read once: the memory is shared, and a peer may write it after check().
  const unsigned n = std::clamp(permits_, 1u, max_permits);
  std::array<Mutex*, detail::LeaseTable::kMax> all{};
  for (unsigned i = 0; i < n; ++i) all[i] = &leases_.slot[i];
  for (;;) {
    unsigned start = hint_.load(std::memory_order_relaxed) % n;
    for (unsigned k = 0; k < n; ++k) {
      unsigned i = (start + k) % n;
      int r = ::pthread_mutex_trylock(all[i]->native());
      if (r == 0 || r == EOWNERDEAD) {
        hint_.store(i + 1, std::memory_order_relaxed);
        bool died = r == EOWNERDEAD;
        if (died) {
          // The permit is all the lease guards: nothing to repair.
          ::pthread_mutex_consistent(all[i]->native());
          recovered_.fetch_add(1, std::memory_order_relaxed);
        }
        return Permit(all[i], died);
      }
    }
    if (!wait)
      return fail(EAGAIN, fmt::format("take a permit of a HolderSemaphore: all {} are held", n));
    if (deadline.expired()) {
      return timed_out(
          fmt::format("take a permit of a HolderSemaphore: all {} still held at the deadline", n));
    }
    auto r = detail::wait_for_leases(std::span(all.data(), n), nullptr, 0, false,
                                     min(deadline, Deadline(kRecheck)));
    if (!r && !(r.error() == std::errc::timed_out)) return std::unexpected(r.error());
    // Timed out: one more look above (a permit freed just now is taken,
    // so a wake-up given to this waiter is not lost to the others).
  }
}

Result<HolderSemaphore::Permit> HolderSemaphore::acquire(Deadline deadline) {
  return take(true, deadline);
}

Result<HolderSemaphore::Permit> HolderSemaphore::try_acquire() {
  return take(false, Deadline::immediate());
}

unsigned HolderSemaphore::available() const noexcept {
  unsigned n = 0;
  if (!check()) return 0;
  for (unsigned i = 0; i < std::min(permits_, max_permits); ++i) {
    auto& w = detail::lock_word(const_cast<Mutex&>(leases_.slot[i]));
    std::uint32_t v = w.load(std::memory_order_relaxed);
    if (v == 0 || (v & FUTEX_OWNER_DIED) != 0) ++n;
  }
  return n;
}

// ---------------------------------------------------------------- Barrier

Barrier::Barrier(unsigned parties) noexcept : magic_(kBarrierMagic), parties_(parties) {}

unsigned Barrier::bound() const noexcept {
  // Read each time from shared memory a peer may write: never past the table.
  return std::min(parties_, detail::LeaseTable::kMax);
}

Result<void> Barrier::check() const {
  if (magic_ != kBarrierMagic)
    return fail(EINVAL, "use a Barrier: none was constructed there (or it was overwritten)");
  if (parties_ < 1 || parties_ > detail::LeaseTable::kMax) {
    return fail(EINVAL, fmt::format("use a Barrier of {} parties: it takes 1 to {}", parties_,
                                    detail::LeaseTable::kMax));
  }
  return {};
}

Barrier::Party& Barrier::Party::operator=(Party&& other) noexcept {
  if (this != &other) {
    leave();
    barrier_ = std::exchange(other.barrier_, nullptr);
    slot_ = other.slot_;
  }
  return *this;
}

void Barrier::Party::leave() noexcept {
  if (barrier_ == nullptr) return;
  ::pthread_mutex_unlock(std::exchange(barrier_, nullptr)->leases_.slot[slot_].native());
}

Result<unsigned> Barrier::Party::arrive_and_wait(Deadline deadline) {
  if (barrier_ == nullptr) return fail(EINVAL, "wait at a Barrier: this party has not joined");
  if (auto ok = barrier_->check(); !ok) return std::unexpected(ok.error());
  return barrier_->arrive(slot_, deadline);
}

bool Barrier::broken() const noexcept {
  return (state_.load(std::memory_order_acquire) & 1) != 0;
}

std::uint32_t Barrier::break_locked() noexcept {
  std::uint32_t s = state_.load(std::memory_order_relaxed);
  arrived_ = 0;
  state_.store(s | 1, std::memory_order_release);
  futex_wake(state_, INT_MAX);
  return s;
}

bool Barrier::found_dead_party(unsigned except_slot) noexcept {
  bool found = false;
  for (unsigned i = 0; i < bound(); ++i) {
    if (i == except_slot) continue;
    Mutex& slot = leases_.slot[i];
    if ((detail::lock_word(slot).load(std::memory_order_acquire) & FUTEX_OWNER_DIED) == 0) continue;
    // Whoever takes the dead lease is the one that reports the death:
    // exactly once. It frees the place for a new party.
    if (::pthread_mutex_trylock(slot.native()) == EOWNERDEAD) {
      ::pthread_mutex_consistent(slot.native());
      ::pthread_mutex_unlock(slot.native());
      found = true;
    }
  }
  return found;
}

Result<Barrier::Party> Barrier::join() {
  if (auto ok = check(); !ok) return std::unexpected(ok.error());
  if (!lock_.same_pid_namespace()) return fail(errc::foreign_pid_namespace, "join a Barrier");
  for (unsigned i = 0; i < bound(); ++i) {
    int r = ::pthread_mutex_trylock(leases_.slot[i].native());
    if (r == 0) return Party(this, i);
    if (r == EOWNERDEAD) {
      // A party died holding this place, and no waiter has seen it yet.
      // With nobody waiting the newcomer simply takes its place. With a
      // generation in progress the dead party may have arrived in it
      // already, and its arrival would count for the newcomer's: that
      // generation breaks (and reports the death), as if a waiter had seen it.
      ::pthread_mutex_consistent(leases_.slot[i].native());
      if (auto g = lock_.lock(); g) {
        (void)g->mark_consistent();
        if (arrived_ > 0) (void)break_locked();
      }
      return Party(this, i);
    }
  }
  return fail(EBUSY, fmt::format("join a Barrier: its {} parties have joined already", parties_));
}

void Barrier::reset() noexcept {
  if (!check()) return;
  auto g = lock_.lock();
  if (g) (void)g->mark_consistent();
  (void)found_dead_party(parties_);  // their places are free for new parties
  arrived_ = 0;
  // Two generations on: a waiter tells a release (one on) from a reset,
  // which breaks the generation it waits in. (The next generation cannot
  // have been completed meanwhile: that waiter would have had to arrive.)
  std::uint32_t generation = (state_.load(std::memory_order_relaxed) >> 1) + 2;
  state_.store(generation << 1, std::memory_order_release);
  futex_wake(state_, INT_MAX);
}

Result<unsigned> Barrier::arrive(unsigned slot, Deadline deadline) {
  auto broken_error = [] { return fail(errc::broken_barrier, "wait at a Barrier"); };
  std::uint32_t s = 0;
  unsigned index = 0;
  {
    auto g = lock_.lock(deadline);
    if (!g) {
      if (g.error() == std::errc::timed_out) {
        // A timeout breaks the barrier, even one spent waiting for its
        // lock (the bit is enough: reset() or the next release clears the rest).
        state_.fetch_or(1, std::memory_order_acq_rel);
        futex_wake(state_, INT_MAX);
        return timed_out(
            "wait at a Barrier: its lock was still held at the deadline (the "
            "barrier is broken)");
      }
      return std::unexpected(g.error());
    }
    s = state_.load(std::memory_order_relaxed);
    if (g->owner_died()) {
      // A party died inside the barrier's own lock: the count may be off.
      (void)g->mark_consistent();
      (void)found_dead_party(slot);  // and its place is freed
      break_locked();
      return broken_error();
    }
    if ((s & 1) != 0) return broken_error();
    if (found_dead_party(slot)) {
      break_locked();
      return broken_error();
    }
    index = arrived_++;
    if (arrived_ == parties_) {
      arrived_ = 0;
      state_.store(((s >> 1) + 1) << 1, std::memory_order_release);
      futex_wake(state_, INT_MAX);
      return index;
    }
  }
  std::array<Mutex*, detail::LeaseTable::kMax> others{};
  unsigned n = 0;
  for (unsigned i = 0; i < bound(); ++i) {
    if (i != slot) others[n++] = &leases_.slot[i];
  }
  for (;;) {
    std::uint32_t now = state_.load(std::memory_order_acquire);
    if ((now >> 1) == (s >> 1) + 1) return index;  // released (whatever happened after)
    if ((now >> 1) != (s >> 1) || (now & 1) != 0) return broken_error();  // reset, or broken
    if (found_dead_party(slot)) {
      // The death breaks the generation current now, which may be the
      // next one: the dead party may have arrived last in ours, releasing
      // us, before it died.
      std::uint32_t before = s;
      if (auto g = lock_.lock(); g) {
        (void)g->mark_consistent();
        before = break_locked();
      }
      if ((before >> 1) == (s >> 1) + 1) return index;
      return broken_error();
    }
    if (deadline.expired()) {
      if (auto g = lock_.lock(); g) {
        (void)g->mark_consistent();
        std::uint32_t last = state_.load(std::memory_order_relaxed);
        if ((last >> 1) == (s >> 1) + 1) return index;  // released at the last moment
        if (last != s) return broken_error();
        break_locked();
      }
      return timed_out(
          "wait at a Barrier: the other parties did not all arrive by the deadline "
          "(the barrier is broken)");
    }
    auto r = detail::wait_for_leases(std::span(others.data(), n), &state_, now, true,
                                     min(deadline, Deadline(kRecheck)));
    if (!r && !(r.error() == std::errc::timed_out)) return std::unexpected(r.error());
  }
}

// ---------------------------------------------------------------- Semaphore

namespace {

// `name` is "" for an unnamed Semaphore. The description is made only for
// an error: these calls are some 20 ns when nobody waits.
std::string sem_what(std::string_view name) {
  return name.empty() ? std::string("a Semaphore") : "POSIX semaphore " + std::string(name);
}

Result<void> sem_wait_impl(sem_t* s, Deadline deadline, unsigned spin, std::string_view name) {
  for (unsigned i = 0; i < spin; ++i) {
    if (::sem_trywait(s) == 0) return {};
    detail::cpu_relax();
  }
  if (deadline.is_never()) {
    if (retry_eintr([&] { return ::sem_wait(s); }) != 0) {
      int err = errno;
      return fail(err, "wait on " + sem_what(name));
    }
    return {};
  }
  auto at = deadline.absolute(CLOCK_MONOTONIC);
  if (retry_eintr([&] { return ::sem_clockwait(s, CLOCK_MONOTONIC, &*at); }) != 0) {
    int err = errno;
    if (err == ETIMEDOUT)
      return timed_out("wait on " + sem_what(name) + ": no post by the deadline");
    return fail(err, "wait on " + sem_what(name));
  }
  return {};
}

Result<void> sem_try_impl(sem_t* s, std::string_view name) {
  if (retry_eintr([&] { return ::sem_trywait(s); }) != 0) {
    int err = errno;
    return fail(err,
                "try to wait on " + sem_what(name) + (err == EAGAIN ? ": its value is 0" : ""));
  }
  return {};
}

Result<void> sem_post_impl(sem_t* s, std::string_view name) {
  if (::sem_post(s) != 0) {
    int err = errno;
    return fail(err, "post " + sem_what(name));
  }
  return {};
}

int sem_value_impl(sem_t* s) {
  int v = 0;
  ::sem_getvalue(s, &v);
  return v;
}

}  // namespace

Semaphore::Semaphore(unsigned initial) noexcept : s_() {
  // EINVAL only above SEM_VALUE_MAX: clamp rather than leave it unset.
  ::sem_init(&s_, 1, std::min<unsigned>(initial, SEM_VALUE_MAX));
}

Result<void> Semaphore::post() {
  return sem_post_impl(&s_, {});
}
Result<void> Semaphore::wait(Deadline deadline, unsigned spin) {
  return sem_wait_impl(&s_, deadline, spin, {});
}
Result<void> Semaphore::try_wait() {
  return sem_try_impl(&s_, {});
}
int Semaphore::value() const noexcept {
  return sem_value_impl(&s_);
}

// ---------------------------------------------------------------- NamedSemaphore

namespace {

// glibc's sem_open(3) keeps NAME in /dev/shm/sem.NAME (without the slash).
std::string sem_path(const std::string& name) {
  return "/dev/shm/sem." + name.substr(1);
}

// The lease on a named semaphore's file, as for a named segment (shm.cpp),
// and its exact mode, and the mark of tether's.
Result<Fd> lease_semaphore(const std::string& name, bool created, mode_t mode,
                           const std::string& what) {
  std::string path = sem_path(name);
  Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return fail(errno, "open " + what + " for its lease");
  if (auto ok = detail::take_shared_lease(fd.get(), what); !ok) return std::unexpected(ok.error());
  // As for a segment (shm.cpp): a cleaner may have removed it as abandoned
  // between sem_open and the lease.
  struct stat mine {};
  struct stat named {};
  if (::fstat(fd.get(), &mine) != 0 || !S_ISREG(mine.st_mode) ||
      ::lstat(path.c_str(), &named) != 0 || mine.st_dev != named.st_dev ||
      mine.st_ino != named.st_ino) {
    return fail(ENOENT, "open " + what + ": it was removed (as abandoned) while being opened");
  }
  // A file shorter than a semaphore (planted, or truncated) would raise
  // SIGBUS on the first post.
  if (static_cast<std::size_t>(mine.st_size) < sizeof(sem_t)) {
    return fail(EINVAL, fmt::format("open {}: it is not a semaphore ({} bytes, fewer than {})",
                                    what, mine.st_size, sizeof(sem_t)));
  }
  if (created && ::fchmod(fd.get(), (mode & 0777) | S_ISVTX) != 0)
    return fail(errno, "set mode of " + what);
  return fd;
}

}  // namespace

NamedSemaphore::NamedSemaphore(NamedSemaphore&& other) noexcept
    : sem_(std::exchange(other.sem_, nullptr)),
      lease_(std::move(other.lease_)),
      object_(std::move(other.object_)) {}

NamedSemaphore& NamedSemaphore::operator=(NamedSemaphore&& other) noexcept {
  if (this != &other) {
    (void)close();
    sem_ = std::exchange(other.sem_, nullptr);
    lease_ = std::move(other.lease_);
    object_ = std::move(other.object_);
  }
  return *this;
}

void NamedSemaphore::release() noexcept {
  object_.release();
  struct stat st {};
  if (lease_ && ::fstat(lease_.get(), &st) == 0 && (st.st_mode & S_ISVTX) != 0)
    (void)::fchmod(lease_.get(), st.st_mode & 0777);
}

NamedSemaphore::~NamedSemaphore() {
  (void)close();
}

Result<void> NamedSemaphore::close() noexcept {
  if (sem_ == nullptr) return {};
  int r = ::sem_close(std::exchange(sem_, nullptr));
  lease_.reset();
  if (r != 0) return fail(errno, "close " + object_.describe());
  return {};
}

Result<NamedSemaphore> NamedSemaphore::create(std::string name, unsigned initial, mode_t mode) {
  if (auto ok = check_posix_ipc_name(name, "POSIX semaphore"); !ok)
    return std::unexpected(ok.error());
  std::string what = "POSIX semaphore " + name;
  if (initial > SEM_VALUE_MAX)
    return fail(EINVAL, fmt::format("create {}: {} is above SEM_VALUE_MAX", what, initial));
  sem_t* s = ::sem_open(name.c_str(), O_CREAT | O_EXCL, mode & 0777, initial);
  if (s == SEM_FAILED) {
    int err = errno;
    if (err == EEXIST) return fail(err, "create " + what + ": the name is taken");
    return fail(err, "create " + what);
  }
  NamedSemaphore n;
  n.sem_ = s;
  auto lease = lease_semaphore(name, true, mode, what);
  if (!lease) {
    ::sem_unlink(name.c_str());
    return std::unexpected(lease.error());
  }
  n.lease_ = std::move(*lease);
  n.object_ =
      NamedObject::posix(NamedObject::Kind::posix_semaphore, std::move(name), n.lease_.get(), true);
  return n;
}

Result<NamedSemaphore> NamedSemaphore::open(std::string name) {
  if (auto ok = check_posix_ipc_name(name, "POSIX semaphore"); !ok)
    return std::unexpected(ok.error());
  std::string what = "POSIX semaphore " + name;
  sem_t* s = ::sem_open(name.c_str(), 0);
  if (s == SEM_FAILED) return fail(errno, "open " + what);
  NamedSemaphore n;
  n.sem_ = s;
  auto lease = lease_semaphore(name, false, 0, what);
  if (!lease) return std::unexpected(lease.error());
  n.lease_ = std::move(*lease);
  n.object_ = NamedObject::posix(NamedObject::Kind::posix_semaphore, std::move(name),
                                 n.lease_.get(), false);
  return n;
}

namespace {
std::unexpected<Error> closed_semaphore(std::string_view op) {
  return fail(EBADF, fmt::format("{} a named semaphore: none open (moved from or closed)", op));
}
}  // namespace

Result<void> NamedSemaphore::post() {
  if (sem_ == nullptr) return closed_semaphore("post");
  return sem_post_impl(sem_, object_.name());
}
Result<void> NamedSemaphore::wait(Deadline deadline, unsigned spin) {
  if (sem_ == nullptr) return closed_semaphore("wait on");
  return sem_wait_impl(sem_, deadline, spin, object_.name());
}
Result<void> NamedSemaphore::try_wait() {
  if (sem_ == nullptr) return closed_semaphore("wait on");
  return sem_try_impl(sem_, object_.name());
}
int NamedSemaphore::value() const noexcept {
  return sem_ == nullptr ? 0 : sem_value_impl(sem_);
}

}  // namespace tether
