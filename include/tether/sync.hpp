// tether/sync.hpp — process-shared synchronisation that survives a
// participant's death: robust mutex, condition, event, barrier, semaphores
// (POSIX unnamed and named, System V sets, and one that knows its holders).
//
//   struct Shared { tether::Mutex lock; long counter = 0; };
//   Shared* s = *tether::shared_new<Shared>();     // shared with fork children
//   ... in any of the processes:
//   auto g = s->lock.lock();                       // Result<MutexGuard>
//   if (!g) return g.error();                      // not_recoverable, timed_out, ...
//   if (g->owner_died()) { repair(*s); g->mark_consistent(); }
//   ++s->counter;                                  // unlocked when g goes
//
// The in-place types (Mutex, Condition, Event, Barrier, Semaphore,
// HolderSemaphore) are placed in shared memory — by shared_new(), by
// Mapping::construct(), or as members of a struct placed there — and used by
// every process that maps it. They are neither copied nor moved, and their
// destructors do nothing: memory that others still map is never torn down
// from under them. NamedSemaphore and SysvSemaphores are handles to kernel
// objects, owned by their creator like every named object.
//
// Every wait has three forms: blocking (Deadline::never()), with a deadline
// on the monotonic clock (never the wall clock, which jumps), and a try_
// form that does not wait. A wait costs no system call when it need not
// wait, and a post or unlock makes none when nobody waits: they go through
// futexes on the shared words. Timed out is std::errc::timed_out; a try_
// form that would have to wait is would-block (EAGAIN).
//
// On death (kill -9 at any instant):
// - Mutex: the next lock() succeeds and its guard says owner_died(); the
//   data may be half-updated. Repair it and mark_consistent(); a guard let
//   go without that leaves the mutex not recoverable (errc::not_recoverable
//   from every later lock: never a hang, never an exception).
// - Condition, Event: a dead waiter takes nothing with it, except a
//   notify_one that had already woken it (notify_all when waiters may die);
//   a dead notifier simply never notifies (wait with a deadline).
// - Barrier: a joined party that dies breaks the barrier for everyone
//   waiting or arriving (errc::broken_barrier), as does one that times out.
// - HolderSemaphore: a dead holder's permit comes back at once, and the
//   next acquirer is told.
// - SysvSemaphores: with SEM_UNDO (the default) the kernel undoes a dead
//   process's operations.
// - Semaphore, NamedSemaphore (POSIX): a semaphore has no owner, so a
//   process killed between wait and post never posts: its permit is lost.
//   Use one of the two above when a holder may die.
//
// Robust mutexes record their holder's thread id, which means nothing in
// another PID namespace: processes in different PID namespaces (containers)
// must not share a Mutex. Each one remembers its creator's namespace, and
// a lock (or join, or acquire) from another namespace fails with
// errc::foreign_pid_namespace rather than misjudge a holder or a death.
#pragma once

#include <pthread.h>
#include <semaphore.h>
#include <sys/sem.h>
#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tether/shm.hpp"
#include "tether/sys.hpp"
#include "tether/sys/named.hpp"

namespace tether {

// One T, constructed from `args` in anonymous shared memory of its own
// (Mapping::anonymous) that stays mapped for the life of the process (see
// Mapping::keep_mapped): shared with every child forked afterwards. The
// memory is never freed; use it for objects that live as long as the
// program (a lock, a counter), and a Mapping for anything else.
template <class T, class... Args>
Result<T*> shared_new(Args&&... args) {
  auto map = Mapping::anonymous(sizeof(T));
  if (!map) return std::unexpected(map.error());
  auto p = map->template construct<T>(std::forward<Args>(args)...);
  if (p) map->keep_mapped();
  return p;
}

// ---------------------------------------------------------------- Mutex

class Mutex;

namespace detail {
// The inode of this process's PID namespace, 0 until read (sync.cpp).
extern std::atomic<std::uint64_t> process_pid_namespace;
}  // namespace detail

// A held Mutex; unlocks when destroyed. Move-only.
class [[nodiscard]] MutexGuard {
 public:
  MutexGuard() noexcept = default;
  MutexGuard(MutexGuard&& other) noexcept
      : mutex_(std::exchange(other.mutex_, nullptr)), owner_died_(other.owner_died_) {}
  MutexGuard& operator=(MutexGuard&& other) noexcept;
  MutexGuard(const MutexGuard&) = delete;
  MutexGuard& operator=(const MutexGuard&) = delete;
  ~MutexGuard();

  bool owns_lock() const noexcept { return mutex_ != nullptr; }
  // The previous holder died holding the lock: what it guards may be
  // half-updated. Repair it, then mark_consistent().
  bool owner_died() const noexcept { return owner_died_; }
  // pthread_mutex_consistent(3): the data is repaired; the mutex goes on
  // as normal after this guard unlocks it.
  Result<void> mark_consistent();
  // Unlocks now. If owner_died() and mark_consistent() was not called, the
  // mutex becomes not recoverable for everyone.
  Result<void> unlock();
  Mutex* mutex() const noexcept { return mutex_; }

 private:
  friend class Mutex;
  friend class Condition;
  MutexGuard(Mutex* m, bool died) noexcept : mutex_(m), owner_died_(died) {}
  Mutex* mutex_ = nullptr;
  bool owner_died_ = false;
};

// A robust, process-shared mutex (glibc's: PTHREAD_MUTEX_ROBUST,
// PTHREAD_PROCESS_SHARED). Normal kind: relocking from the thread that
// holds it is EDEADLK, not a hang. Recursive kind: it counts.
class Mutex {
 public:
  enum class Kind : unsigned char { normal, recursive };

  explicit Mutex(Kind kind = Kind::normal) noexcept;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  ~Mutex() = default;  // see the top of this file

  // Blocks until held, or until the deadline (timed_out). An error is
  // not_recoverable, EDEADLK (this thread holds it), or
  // foreign_pid_namespace (see the top of this file).
  Result<MutexGuard> lock(Deadline deadline = Deadline::never()) {
    // The common case inline, as cheap as glibc's own lock: no deadline,
    // this namespace known to be the creator's, not marked not recoverable,
    // and free. A wait is never one long sleep in glibc (see sync.cpp).
    if (deadline.is_never() && plain()) [[likely]] {
      int r = ::pthread_mutex_trylock(&m_);
      if (r == 0) [[likely]]
        return MutexGuard(this, false);
      return lock_contended(r);
    }
    return lock_checked(deadline);
  }
  // Would-block (EAGAIN) when someone holds it.
  Result<MutexGuard> try_lock();

  // True when this process is in the PID namespace of the mutex's creator
  // (the only place a robust mutex works).
  bool same_pid_namespace() const noexcept;
  Kind kind() const noexcept { return kind_; }
  pthread_mutex_t* native() noexcept { return &m_; }

 private:
  friend class MutexGuard;
  friend class Condition;
  // glibc's mark of a mutex that is not recoverable (see sync.cpp).
  static constexpr int kNotRecoverable = 0x7fffffff - 1;
  bool plain() const noexcept {
    std::uint64_t here = detail::process_pid_namespace.load(std::memory_order_relaxed);
    return here != 0 && here == pid_ns_ &&
           __atomic_load_n(&m_.__data.__owner, __ATOMIC_RELAXED) != kNotRecoverable;
  }
  Result<MutexGuard> lock_checked(Deadline deadline);
  Result<MutexGuard> lock_contended(int trylock_result);
  // pthread_mutex_clocklock in slices, until held or the deadline: its
  // result (0, EOWNERDEAD, ETIMEDOUT, ...).
  int lock_in_slices(Deadline deadline) noexcept;
  // After a trylock that found the mutex not recoverable (see sync.cpp).
  void undo_failed_trylock() noexcept;
  Result<MutexGuard> finish(int r, const char* op);
  pthread_mutex_t m_;
  std::uint64_t pid_ns_;  // inode of the creator's /proc/self/ns/pid
  Kind kind_;
};

inline MutexGuard::~MutexGuard() {
  if (mutex_ != nullptr) ::pthread_mutex_unlock(mutex_->native());
}

// ---------------------------------------------------------------- Condition

// A process-shared condition variable used with a Mutex. Built on a futex
// sequence word, not pthread_cond_t: glibc's condition keeps per-waiter
// state in shared memory that a waiter killed mid-wait corrupts (a later
// signal can be spent on the dead waiter, and others sleep through it).
// Here a dead waiter leaves nothing that matters. Wake-ups can be spurious:
// wait in a loop on your predicate, or use the predicate form.
class Condition {
 public:
  Condition() noexcept = default;
  Condition(const Condition&) = delete;
  Condition& operator=(const Condition&) = delete;

  // Unlocks the guard's mutex, sleeps until notified or the deadline, and
  // locks it again (with no deadline: the mutex is robust, so this cannot
  // hang on a dead holder). timed_out leaves the mutex held. If the mutex's
  // holder died meanwhile, the guard's owner_died() is true on return. On
  // not_recoverable the guard holds nothing.
  Result<void> wait(MutexGuard& guard, Deadline deadline = Deadline::never());
  // Waits until pred() is true (checked with the mutex held).
  template <class Pred>
  Result<void> wait(MutexGuard& guard, Deadline deadline, Pred pred) {
    while (!pred()) {
      if (auto r = wait(guard, deadline); !r) {
        if (r.error() == std::errc::timed_out && pred()) return {};
        return r;
      }
    }
    return {};
  }
  void notify_one() noexcept;
  void notify_all() noexcept;

 private:
  void notify(int count) noexcept;
  // Bit 0: someone may be asleep. The rest counts notifications.
  std::atomic<std::uint32_t> seq_{0};
};

// ---------------------------------------------------------------- Event

// multiprocessing.Event: a flag that processes wait for.
class Event {
 public:
  Event() noexcept = default;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // Sets the flag and wakes every waiter (a system call only if someone waits).
  void set() noexcept;
  void clear() noexcept;
  bool is_set() const noexcept { return (state_.load(std::memory_order_acquire) & kSet) != 0; }
  // Returns once the flag is set, or was set at any moment since the call
  // began (a set() and clear() in quick succession still wakes every
  // waiter, as multiprocessing.Event's wait returns True); timed_out
  // otherwise.
  Result<void> wait(Deadline deadline = Deadline::never()) const;

 private:
  // Bit 0: set. Bit 1: someone may sleep. The rest: how many set() calls,
  // so that a waiter sees a set that was cleared again at once.
  static constexpr std::uint32_t kSet = 1, kWaiters = 2, kGeneration = 4;
  mutable std::atomic<std::uint32_t> state_{0};
};

// ---------------------------------------------------------------- leases

// A table of up to 64 leases for the types below: robust mutexes, each held
// by one participant for as long as it takes part, so that the kernel tells
// the others when it dies (through the mutex's futex: no polling).
namespace detail {
struct LeaseTable {
  static constexpr unsigned kMax = 64;
  std::array<Mutex, kMax> slot;
};
}  // namespace detail

// ---------------------------------------------------------------- HolderSemaphore

// A counting semaphore that knows its holders: each permit is a lease, so a
// holder that dies (or a thread that ends) without releasing gives its
// permit back at once, and whoever takes it next is told. At most 64
// permits. A permit belongs to the thread that acquired it, as a lock does.
class HolderSemaphore {
 public:
  static constexpr unsigned max_permits = detail::LeaseTable::kMax;

  // A held permit; released when destroyed. Move-only.
  class [[nodiscard]] Permit {
   public:
    Permit() noexcept = default;
    Permit(Permit&& other) noexcept
        : slot_(std::exchange(other.slot_, nullptr)), holder_died_(other.holder_died_) {}
    Permit& operator=(Permit&& other) noexcept;
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;
    ~Permit() { release(); }
    bool held() const noexcept { return slot_ != nullptr; }
    // This permit came back from a holder that died holding it.
    bool holder_died() const noexcept { return holder_died_; }
    void release() noexcept;

   private:
    friend class HolderSemaphore;
    Permit(Mutex* slot, bool died) noexcept : slot_(slot), holder_died_(died) {}
    Mutex* slot_ = nullptr;
    bool holder_died_ = false;
  };

  // `permits`: 1 to max_permits. Any other number makes a semaphore whose
  // every call fails with EINVAL, saying so (a constructor in shared
  // memory has no way to report).
  explicit HolderSemaphore(unsigned permits) noexcept;
  HolderSemaphore(const HolderSemaphore&) = delete;
  HolderSemaphore& operator=(const HolderSemaphore&) = delete;

  Result<Permit> acquire(Deadline deadline = Deadline::never());
  Result<Permit> try_acquire();
  // Permits free now (a snapshot).
  unsigned available() const noexcept;
  unsigned permits() const noexcept { return permits_; }
  // Permits recovered from dead holders so far.
  std::uint64_t recovered() const noexcept { return recovered_.load(std::memory_order_relaxed); }

 private:
  Result<Permit> take(bool wait, Deadline deadline);
  // Memory another process can write is checked before it is trusted: a
  // HolderSemaphore viewed where none was constructed, or overwritten,
  // fails with EINVAL instead of indexing past its table.
  Result<void> check() const;
  std::uint32_t magic_;
  detail::LeaseTable leases_;
  unsigned permits_;
  std::atomic<std::uint32_t> hint_{0};
  std::atomic<std::uint64_t> recovered_{0};
};

// ---------------------------------------------------------------- Barrier

// N parties meet, then all go on; reusable, generation after generation
// (multiprocessing.Barrier). A party joins first (a lease, at most 64), so
// that its death, wherever it happens, breaks the barrier for everyone
// (errc::broken_barrier, as Python's BrokenBarrierError); a party that
// times out breaks it too. reset() mends it.
class Barrier {
 public:
  class Party {
   public:
    Party() noexcept = default;
    Party(Party&& other) noexcept
        : barrier_(std::exchange(other.barrier_, nullptr)), slot_(other.slot_) {}
    Party& operator=(Party&& other) noexcept;
    Party(const Party&) = delete;
    Party& operator=(const Party&) = delete;
    ~Party() { leave(); }

    // Waits for the others: returns this party's arrival index in its
    // generation (0 to parties - 1; the last to arrive, parties - 1, is the
    // one that releases the others). broken_barrier when the barrier is or
    // becomes broken; timed_out breaks it.
    Result<unsigned> arrive_and_wait(Deadline deadline = Deadline::never());
    // Gives up its place (breaking nothing).
    void leave() noexcept;
    bool joined() const noexcept { return barrier_ != nullptr; }

   private:
    friend class Barrier;
    Party(Barrier* b, unsigned slot) noexcept : barrier_(b), slot_(slot) {}
    Barrier* barrier_ = nullptr;
    unsigned slot_ = 0;
  };

  // `parties`: 1 to 64. Any other number makes a barrier whose every call
  // fails with EINVAL, saying so.
  explicit Barrier(unsigned parties) noexcept;
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;

  // Takes a place at the barrier; EBUSY when `parties` have joined already.
  // A place a dead party held, whose death nobody waiting has seen yet, is
  // taken over.
  Result<Party> join();
  bool broken() const noexcept;
  // Mends a broken barrier, for a new generation with nobody waiting.
  void reset() noexcept;
  unsigned parties() const noexcept { return parties_; }

 private:
  Result<unsigned> arrive(unsigned slot, Deadline deadline);
  // Breaks the current generation (lock_ held); returns the state before.
  std::uint32_t break_locked() noexcept;
  bool found_dead_party(unsigned except_slot) noexcept;
  Result<void> check() const;  // as HolderSemaphore::check
  unsigned bound() const noexcept;
  std::uint32_t magic_;
  detail::LeaseTable leases_;
  Mutex lock_;  // guards arrived_ and the generation
  unsigned parties_;
  unsigned arrived_ = 0;
  // generation << 1 | broken: the futex word waiters sleep on.
  std::atomic<std::uint32_t> state_{0};
};

// ---------------------------------------------------------------- POSIX semaphores

// A POSIX unnamed semaphore (sem_init(3), process-shared), in place. No
// owner: see the top of this file.
class Semaphore {
 public:
  explicit Semaphore(unsigned initial = 0) noexcept;
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;
  ~Semaphore() = default;

  // EOVERFLOW past SEM_VALUE_MAX.
  Result<void> post();
  // Takes one, waiting until the deadline (sem_clockwait on CLOCK_MONOTONIC).
  // `spin`: tries that many times before sleeping, which saves the sleep
  // and wake-up when the poster is running on another CPU.
  Result<void> wait(Deadline deadline = Deadline::never(), unsigned spin = 0);
  Result<void> try_wait();
  int value() const noexcept;
  sem_t* native() noexcept { return &s_; }

 private:
  mutable sem_t s_;
};

// A POSIX named semaphore (sem_open(3), /dev/shm/sem.NAME), reachable by any
// process that knows the name. The creator owns the name. Like a named
// segment, whoever has it open holds a lease (posix_shared_memory_list
// lists it as "/sem.NAME").
class NamedSemaphore {
 public:
  NamedSemaphore() noexcept = default;
  NamedSemaphore(NamedSemaphore&& other) noexcept;
  NamedSemaphore& operator=(NamedSemaphore&& other) noexcept;
  NamedSemaphore(const NamedSemaphore&) = delete;
  NamedSemaphore& operator=(const NamedSemaphore&) = delete;
  ~NamedSemaphore();

  // A new semaphore (EEXIST if the name is taken), exactly `mode`.
  static Result<NamedSemaphore> create(std::string name, unsigned initial, mode_t mode = 0600);
  static Result<NamedSemaphore> open(std::string name);

  Result<void> post();
  Result<void> wait(Deadline deadline = Deadline::never(), unsigned spin = 0);
  Result<void> try_wait();
  int value() const noexcept;
  const std::string& name() const noexcept { return object_.name(); }
  bool owns() const noexcept { return object_.owns(); }
  // Keeps the name after this object is gone (and drops tether's mark, as
  // PosixSharedMemory::release does, so the cleanup leaves it alone).
  void release() noexcept;
  Result<void> remove() { return object_.remove(); }
  // sem_close; an owner still removes the name when destroyed.
  Result<void> close() noexcept;

 private:
  sem_t* sem_ = nullptr;
  Fd lease_;
  NamedObject object_;
};

// ---------------------------------------------------------------- System V

// A System V semaphore set (semget(2)): several counters changed together,
// all or nothing, with the kernel undoing a dead process's operations.
class SysvSemaphores {
 public:
  // One operation of an all-or-nothing group (semop(2)'s sembuf).
  struct Op {
    unsigned short index = 0;
    short delta = 0;   // > 0 adds; < 0 takes, waiting for enough; 0 waits for zero
    bool undo = true;  // SEM_UNDO: the kernel reverts it when this process ends
  };
  struct Stats {
    std::size_t count = 0;
    uid_t owner = 0;
    mode_t mode = 0;
  };

  static constexpr SysvKey private_key = SysvKey::private_key();

  SysvSemaphores() noexcept = default;

  // A new set of initial.size() semaphores (1 to SEMMSL, 32000 on Linux)
  // with those values (EEXIST if the key is taken), exactly `mode`. Openers
  // never see it half made: open() waits until it is initialised.
  static Result<SysvSemaphores> create(SysvKey key, std::span<const unsigned short> initial,
                                       mode_t mode = 0600);
  // An existing set by key (ENOENT at once if there is none: a program
  // that may start before the creator retries); waits up to `ready` for
  // its creator to finish setting it up (timed_out otherwise).
  static Result<SysvSemaphores> open(SysvKey key, Deadline ready = std::chrono::seconds(1));
  static Result<SysvSemaphores> from_id(int id);

  // semop/semtimedop: every operation or none. The deadline is measured on
  // the monotonic clock (semtimedop's timeout is relative). Removal of the
  // set while waiting is EIDRM.
  // (These forms are inline on purpose: each return after a system call
  // costs a mispredicted branch on kernels that refill the return stack
  // buffer on the way back to user space, so one level of calls fewer is
  // measurable against a 300 ns semop.)
  Result<void> apply(std::span<const Op> ops, Deadline deadline = Deadline::never()) const {
    return apply_impl(ops, deadline, false);
  }
  Result<void> try_apply(std::span<const Op> ops) const {
    return apply_impl(ops, Deadline::immediate(), true);
  }
  // Shorthands for one semaphore. `undo` (SEM_UNDO) is right for a
  // semaphore used as a lock, taken and given back by the same process: if
  // it dies holding it, the kernel gives it back. It is wrong for a signal
  // from one process to another: the kernel withdraws an undone post when
  // the poster exits, before anyone took it. Signal with undo = false.
  Result<void> wait(unsigned short index, short count = 1, Deadline deadline = Deadline::never(),
                    bool undo = true) const {
    if (count < 1) [[unlikely]]
      return bad_count("wait on", count);
    return one(index, static_cast<short>(-count), deadline, undo);
  }
  Result<void> post(unsigned short index, short count = 1, bool undo = true) const {
    if (count < 1) [[unlikely]]
      return bad_count("post", count);
    return one(index, count, Deadline::never(), undo);
  }
  Result<void> wait_zero(unsigned short index, Deadline deadline = Deadline::never()) const {
    const Op op{index, 0, false};
    return apply_impl(std::span(&op, 1), deadline, false);
  }

  Result<int> value(unsigned short index) const;                          // GETVAL
  Result<void> set_value(unsigned short index, int value) const;          // SETVAL
  Result<std::vector<unsigned short>> values() const;                     // GETALL
  Result<void> set_values(std::span<const unsigned short> values) const;  // SETALL
  Result<int> waiting(unsigned short index) const;       // GETNCNT: waiting to take
  Result<int> waiting_zero(unsigned short index) const;  // GETZCNT: waiting for zero
  Result<pid_t> last_pid(unsigned short index) const;    // GETPID
  Result<Stats> stats() const;

  std::size_t size() const noexcept { return count_; }
  int id() const noexcept { return object_.id(); }
  bool valid() const noexcept { return object_.valid(); }
  bool owns() const noexcept { return object_.owns(); }
  void release() noexcept { object_.release(); }
  // IPC_RMID: waiters wake with EIDRM.
  Result<void> remove() { return object_.remove(); }

 private:
  Result<void> apply_impl(std::span<const Op> ops, Deadline deadline, bool once) const;
  // One operation with no deadline is one semop(2) here, inline. Anything
  // else goes through apply_impl; so does an interrupted call (EINTR
  // changes nothing, and apply_impl resumes). Any other failure is
  // reported as it is, never retried: on a removed set a second try would
  // say EINVAL instead of EIDRM, or reach another set that took its id.
  Result<void> one(unsigned short index, short delta, Deadline deadline, bool undo) const {
    if (deadline.is_never() && index < count_ && object_.valid()) [[likely]] {
      ::sembuf op{index, delta, static_cast<short>(undo ? SEM_UNDO : 0)};
      if (::semop(object_.id(), &op, 1) == 0) [[likely]]
        return {};
      if (errno != EINTR) return op_failed(errno, false);
    }
    const Op op{index, delta, undo};
    return apply_impl(std::span(&op, 1), deadline, false);
  }
  Result<void> op_failed(int err, bool once) const;
  std::unexpected<Error> bad_count(std::string_view op, short count) const;
  Result<int> control(unsigned short index, int cmd, std::string_view what) const;
  NamedObject object_;
  std::size_t count_ = 0;
};

}  // namespace tether
