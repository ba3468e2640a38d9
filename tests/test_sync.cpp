// Process-shared synchronisation, with participants killed -9.
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/sem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include "support.hpp"
#include "tether/sync.hpp"

using namespace std::chrono_literals;
using tether_test::must;
using tether_test::run_in_child;

namespace {

class Sync : public tether_test::Clean {};

// A one-way "ready" signal from a child to the parent (or back).
struct Flag {
  tether::Fd r, w;
  Flag() {
    auto p = must(tether::make_pipe());
    r = std::move(p.first);
    w = std::move(p.second);
  }
  void send() const {
    if (::write(w.get(), "x", 1) != 1) std::abort();
  }
  bool await(tether::Deadline d = 30s) const {
    char c = 0;
    auto ready = tether::wait_fd(r.get(), POLLIN, d, "a flag");
    return ready && ::read(r.get(), &c, 1) == 1;
  }
};

// A child that runs `body` and is then killed -9 by the parent, after it
// sends its flag.
tether::Process spawn(const std::function<int()>& body) {
  return must(tether::fork(body));
}

void kill_and_reap(tether::Process& p) {
  auto st = p.kill();
  ASSERT_TRUE(st.has_value()) << st.error().message();
}

}  // namespace

// ---------------------------------------------------------------- Mutex

TEST_F(Sync, MutexExcludesAnotherProcessWithTryAndDeadlineForms) {
  auto* m = must(tether::shared_new<tether::Mutex>());
  Flag held, release;
  auto child = spawn([&] {
    auto g = m->lock();
    if (!g) return 1;
    held.send();
    return release.await() ? 0 : 2;
  });
  ASSERT_TRUE(held.await());
  TT_EXPECT_ERROR(m->try_lock(), std::errc::resource_unavailable_try_again);
  auto t0 = std::chrono::steady_clock::now();
  TT_EXPECT_ERROR(m->lock(50ms), std::errc::timed_out);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 45ms);
  release.send();
  auto g = m->lock(30s);
  TT_ASSERT_OK(g);
  EXPECT_FALSE(g->owner_died());
  EXPECT_EQ(must(child.wait(30s)).code(), 0);
}

TEST_F(Sync, MutexWhoseHolderIsKilledIsRecoveredByTheNextLocker) {
  struct Shared {
    tether::Mutex lock;
    int a = 0, b = 0;  // invariant: a == b
  };
  auto* s = must(tether::shared_new<Shared>());
  Flag halfway;
  auto child = spawn([&] {
    auto g = s->lock.lock();
    if (!g) return 1;
    s->a = 1;  // ... and dies before setting b
    halfway.send();
    ::pause();
    return 0;
  });
  ASSERT_TRUE(halfway.await());
  kill_and_reap(child);
  {
    auto g = s->lock.lock(10s);
    TT_ASSERT_OK(g);
    ASSERT_TRUE(g->owner_died());
    EXPECT_NE(s->a, s->b);
    s->b = s->a;  // repair
    TT_ASSERT_OK(g->mark_consistent());
    EXPECT_FALSE(g->owner_died());
  }
  auto again = s->lock.lock(10s);
  TT_ASSERT_OK(again);
  EXPECT_FALSE(again->owner_died());  // reported once
}

// A child that takes the lock and dies holding it; waits until it is dead.
void die_holding(tether::Mutex& m) {
  auto child = spawn([&] {
    auto g = m.lock();
    if (!g) return 1;
    ::raise(SIGKILL);
    return 2;
  });
  auto st = must(child.wait(30s));
  ASSERT_EQ(st.signal(), SIGKILL) << st.describe();
}

TEST_F(Sync, MutexNotMadeConsistentIsNotRecoverableForEveryoneNeverAHang) {
  auto* m = must(tether::shared_new<tether::Mutex>());
  die_holding(*m);
  {
    auto g = m->lock(10s);
    TT_ASSERT_OK(g);
    EXPECT_TRUE(g->owner_died());
    // Let go without repairing.
  }
  auto later = m->lock(10s);
  TT_ASSERT_ERROR(later, tether::errc::not_recoverable);
  EXPECT_NE(later.error().message().find("not recoverable"), std::string::npos);
  TT_EXPECT_ERROR(m->try_lock(), tether::errc::not_recoverable);
  EXPECT_EQ(run_in_child([&] {
              auto g = m->lock(10s);
              return !g && g.error() == tether::errc::not_recoverable ? 0 : 1;
            }),
            0);
}

// The state a robust mutex is left in when the waiter that an unlock woke
// is killed before it takes the lock, and another process takes it first
// (without the waiters bit, as glibc does when it did not have to wait):
// the lock word says "free, nobody waits" while other waiters sleep on it,
// and no later unlock wakes them. The kernel's own repair (a dead thread's
// pending lock) wakes someone only if the word is still 0 when it dies.
// Reproduced here without the race: a holder clears the word and exits
// without waking anyone. A waiter must still get the lock, in every form.
namespace {

// True once process `pid` sleeps (state S) with the mutex word showing a
// waiter.
bool asleep_on(tether::Mutex& m, pid_t pid) {
  for (int i = 0; i < 3000; ++i) {
    int w = std::atomic_ref<int>(m.native()->__data.__lock).load();
    if ((w & FUTEX_WAITERS) != 0) {
      std::this_thread::sleep_for(20ms);  // from setting the bit to the futex wait
      std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
      std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      auto close = stat.rfind(')');
      if (close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'S')
        return true;
    }
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

// A process that holds `m` until `go`, then clears the lock word as an
// unlock would, wakes nobody, and exits.
tether::Process hold_then_vanish(tether::Mutex& m, const Flag& held, const Flag& go) {
  return spawn([&] {
    auto g = m.lock();
    if (!g) return 1;
    held.send();
    if (!go.await()) return 2;
    std::atomic_ref<int>(m.native()->__data.__lock).store(0);
    ::_exit(0);
  });
}

}  // namespace

TEST_F(Sync, MutexWaiterWhoseWakeUpWentToADeadWaiterStillGetsTheLock) {
  for (int form = 0; form < 3; ++form) {
    SCOPED_TRACE(form == 0 ? "lock()" : form == 1 ? "lock(deadline)" : "Condition::wait");
    struct Shared {
      tether::Mutex lock;
      tether::Condition c;
      std::atomic<int> waiting{0};
    };
    auto* s = must(tether::shared_new<Shared>());
    Flag held, go;
    tether::Process holder;
    if (form < 2) {
      holder = hold_then_vanish(s->lock, held, go);
      ASSERT_TRUE(held.await());
    }
    auto waiter = spawn([&] {
      if (form == 0) return s->lock.lock() ? 0 : 1;
      if (form == 1) return s->lock.lock(30s) ? 0 : 1;
      auto g = s->lock.lock();
      if (!g) return 1;
      s->waiting.store(1);
      auto r = s->c.wait(*g, 30s);  // wakes to find the holder below has the mutex
      return r && g->owns_lock() ? 0 : 2;
    });
    if (form == 2) {
      while (s->waiting.load() == 0) std::this_thread::sleep_for(1ms);
      holder = hold_then_vanish(s->lock, held, go);  // waits for the waiter's unlock
      ASSERT_TRUE(held.await());
      s->c.notify_all();
    }
    ASSERT_TRUE(asleep_on(s->lock, waiter.pid()));
    go.send();
    EXPECT_EQ(must(holder.wait(10s)).code(), 0);
    // The word is free and nobody will wake the waiter: it must find that
    // out for itself, well before its own deadline.
    auto st = waiter.wait(10s);
    if (!st) (void)waiter.kill();
    ASSERT_TRUE(st.has_value()) << "the waiter still sleeps on a free mutex";
    EXPECT_EQ(st->code(), 0) << st->describe();
  }
}

TEST_F(Sync, MutexRelockIsAnErrorAndTheRecursiveKindCounts) {
  tether::Mutex m;
  auto g = m.lock();
  TT_ASSERT_OK(g);
  TT_EXPECT_ERROR(m.lock(1s), std::errc::resource_deadlock_would_occur);
  EXPECT_TRUE(m.same_pid_namespace());
  tether::Mutex r(tether::Mutex::Kind::recursive);
  auto g1 = r.lock();
  auto g2 = r.lock();
  TT_ASSERT_OK(g1);
  TT_ASSERT_OK(g2);
  TT_ASSERT_OK(g2->unlock());
  // Still held once: another process cannot take it.
  auto* shared = must(tether::shared_new<tether::Mutex>(tether::Mutex::Kind::recursive));
  auto h1 = shared->lock();
  auto h2 = shared->lock();
  TT_ASSERT_OK(h2->unlock());
  EXPECT_EQ(run_in_child([&] { return shared->try_lock() ? 1 : 0; }), 0);
  TT_ASSERT_OK(h1->unlock());
  EXPECT_EQ(run_in_child([&] { return shared->try_lock() ? 0 : 1; }), 0);
}

TEST_F(Sync, MutexRefusesAProcessOfAnotherPidNamespace) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a new PID namespace";
  auto* m = must(tether::shared_new<tether::Mutex>());
  auto* sem = must(tether::shared_new<tether::HolderSemaphore>(2));
  auto* bar = must(tether::shared_new<tether::Barrier>(2));
  int code = run_in_child([&] {
    if (::unshare(CLONE_NEWPID) != 0) return errno == EPERM ? 77 : 10;
    // The child of this process is the first of the new namespace (pid 1).
    auto inner = tether::fork([&] {
      if (::getpid() != 1) return 11;
      auto g = m->lock(1s);
      if (g || !(g.error() == tether::errc::foreign_pid_namespace)) return 1;
      if (m->same_pid_namespace()) return 2;
      auto p = sem->try_acquire();
      if (p || !(p.error() == tether::errc::foreign_pid_namespace)) return 3;
      auto j = bar->join();
      if (j || !(j.error() == tether::errc::foreign_pid_namespace)) return 4;
      return 0;
    });
    if (!inner) return 12;
    auto st = inner->wait(30s);
    return st && st->code() ? *st->code() : 13;
  });
  if (code == 77) GTEST_SKIP() << "unshare(CLONE_NEWPID) is not allowed here";
  EXPECT_EQ(code, 0);
  // Still usable here.
  TT_ASSERT_OK(m->lock(1s));
}

TEST_F(Sync, LockedCounterReachesTheSumAndAPlainVariableIsNotShared) {
  struct Shared {
    tether::Mutex lock;
    long counter = 0;
  };
  auto* s = must(tether::shared_new<Shared>());
  long plain = 0;
  auto work = [&] {
    for (int i = 0; i < 100000; ++i) {
      auto g = s->lock.lock();
      if (!g) return 1;
      ++s->counter;
      ++plain;  // the child's own copy
    }
    return 0;
  };
  auto a = spawn(work);
  auto b = spawn(work);
  EXPECT_EQ(must(a.wait(60s)).code(), 0);
  EXPECT_EQ(must(b.wait(60s)).code(), 0);
  EXPECT_EQ(s->counter, 200000);
  EXPECT_EQ(plain, 0);
}

// ---------------------------------------------------------------- Condition

TEST_F(Sync, ConditionWakesAWaiterInAnotherProcess) {
  struct Shared {
    tether::Mutex lock;
    tether::Condition changed;
    int value = 0;
  };
  auto* s = must(tether::shared_new<Shared>());
  auto waiter = spawn([&] {
    auto g = s->lock.lock();
    if (!g) return 1;
    auto r = s->changed.wait(*g, 30s, [&] { return s->value == 42; });
    return r && g->owns_lock() ? 0 : 2;
  });
  std::this_thread::sleep_for(20ms);
  {
    auto g = s->lock.lock();
    s->value = 42;
  }
  s->changed.notify_all();
  EXPECT_EQ(must(waiter.wait(30s)).code(), 0);
  // A wait that times out holds the mutex again.
  auto g = s->lock.lock();
  TT_ASSERT_OK(g);
  TT_EXPECT_ERROR(s->changed.wait(*g, 20ms), std::errc::timed_out);
  EXPECT_TRUE(g->owns_lock());
  EXPECT_EQ(run_in_child([&] { return s->lock.try_lock() ? 1 : 0; }), 0);
}

TEST_F(Sync, ConditionWaiterKilledMidWaitTakesNoNotificationWithIt) {
  struct Shared {
    tether::Mutex lock;
    tether::Condition changed;
    int value = 0;
    std::atomic<int> waiting{0};
  };
  auto* s = must(tether::shared_new<Shared>());
  auto wait_for = [&](int want) {
    return [&, want] {
      auto g = s->lock.lock();
      if (!g) return 1;
      s->waiting.fetch_add(1);
      auto r = s->changed.wait(*g, 30s, [&] { return s->value >= want; });
      return r ? 0 : 2;
    };
  };
  auto doomed = spawn(wait_for(1));
  while (s->waiting.load() < 1) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(10ms);  // asleep in the futex
  kill_and_reap(doomed);
  auto live = spawn(wait_for(1));
  while (s->waiting.load() < 2) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(10ms);
  {
    auto g = s->lock.lock();
    TT_ASSERT_OK(g);
    s->value = 1;
  }
  s->changed.notify_one();  // the dead waiter cannot take it
  auto st = must(live.wait(10s));
  EXPECT_EQ(st.code(), 0) << st.describe();
}

TEST_F(Sync, ConditionWaitRefusesAMutexLeftInconsistent) {
  struct Shared {
    tether::Mutex lock;
    tether::Condition c;
  };
  auto* s = must(tether::shared_new<Shared>());
  die_holding(s->lock);
  auto g = s->lock.lock();
  TT_ASSERT_OK(g);
  ASSERT_TRUE(g->owner_died());
  TT_EXPECT_ERROR(s->c.wait(*g, 10ms), std::errc::invalid_argument);
  TT_ASSERT_OK(g->mark_consistent());
  TT_EXPECT_ERROR(s->c.wait(*g, 10ms), std::errc::timed_out);
}

// ---------------------------------------------------------------- Event

TEST_F(Sync, EventSetAndClearedAtOnceStillWakesTheWaiters) {
  auto* e = must(tether::shared_new<tether::Event>());
  auto* asleep = must(tether::shared_new<std::atomic<int>>(0));
  auto w = spawn([&] {
    asleep->store(1);
    return e->wait(10s) ? 0 : 1;
  });
  while (asleep->load() == 0) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(20ms);
  e->set();
  e->clear();
  EXPECT_EQ(must(w.wait(30s)).code(), 0);
  EXPECT_FALSE(e->is_set());
}

TEST_F(Sync, ObjectsThatWereNeverConstructedAreRefusedNotTrusted) {
  // Zeroed shared memory, as a peer sees it before the creator constructs.
  auto map = must(tether::Mapping::anonymous(1 << 16));
  map.keep_mapped();
  auto* m = must(map.view<tether::Mutex>(0));
  auto g = m->lock(1s);
  TT_ASSERT_ERROR(g, std::errc::invalid_argument);
  EXPECT_NE(g.error().message().find("none was constructed"), std::string::npos);
  TT_EXPECT_ERROR(m->try_lock(), std::errc::invalid_argument);
  auto* sem = must(map.view<tether::HolderSemaphore>(4096));
  TT_EXPECT_ERROR(sem->try_acquire(), std::errc::invalid_argument);
  EXPECT_EQ(sem->available(), 0u);
  auto* bar = must(map.view<tether::Barrier>(16384));
  TT_EXPECT_ERROR(bar->join(), std::errc::invalid_argument);
  // Out-of-range sizes say so at first use.
  auto* zero = must(map.construct_at<tether::HolderSemaphore>(32768, 0u));
  auto z = zero->try_acquire();
  TT_ASSERT_ERROR(z, std::errc::invalid_argument);
  EXPECT_NE(z.error().message().find("1 to 64"), std::string::npos);
  auto* wide = must(map.construct_at<tether::Barrier>(40960, 100u));
  TT_EXPECT_ERROR(wide->join(), std::errc::invalid_argument);
}

TEST_F(Sync, EventSetWakesEveryWaiter) {
  auto* e = must(tether::shared_new<tether::Event>());
  EXPECT_FALSE(e->is_set());
  TT_EXPECT_ERROR(e->wait(10ms), std::errc::timed_out);
  auto w1 = spawn([&] { return e->wait(30s) ? 0 : 1; });
  auto w2 = spawn([&] { return e->wait(30s) ? 0 : 1; });
  std::this_thread::sleep_for(20ms);
  e->set();
  EXPECT_EQ(must(w1.wait(30s)).code(), 0);
  EXPECT_EQ(must(w2.wait(30s)).code(), 0);
  EXPECT_TRUE(e->is_set());
  TT_ASSERT_OK(e->wait(tether::Deadline::immediate()));
  e->clear();
  EXPECT_FALSE(e->is_set());
  TT_EXPECT_ERROR(e->wait(tether::Deadline::immediate()), std::errc::timed_out);
}

// ---------------------------------------------------------------- HolderSemaphore

TEST_F(Sync, HolderSemaphoreGetsADeadHoldersPermitsBack) {
  auto* sem = must(tether::shared_new<tether::HolderSemaphore>(3));
  EXPECT_EQ(sem->available(), 3u);
  Flag holding;
  auto holder = spawn([&] {
    auto a = sem->acquire();
    auto b = sem->acquire();
    if (!a || !b) return 1;
    holding.send();
    ::pause();
    return 0;
  });
  ASSERT_TRUE(holding.await());
  EXPECT_EQ(sem->available(), 1u);
  auto mine = sem->try_acquire();
  TT_ASSERT_OK(mine);
  EXPECT_FALSE(mine->holder_died());
  TT_EXPECT_ERROR(sem->try_acquire(), std::errc::resource_unavailable_try_again);
  TT_EXPECT_ERROR(sem->acquire(20ms), std::errc::timed_out);
  // A waiter blocked now is woken by the holder's death, not by polling.
  auto waiter = spawn([&] {
    auto p = sem->acquire(30s);
    return p && p->holder_died() ? 0 : 1;
  });
  std::this_thread::sleep_for(20ms);
  kill_and_reap(holder);
  EXPECT_EQ(must(waiter.wait(30s)).code(), 0);
  // The other dead permit is there too, and reported once.
  auto next = sem->acquire(10s);
  TT_ASSERT_OK(next);
  EXPECT_TRUE(next->holder_died());
  EXPECT_EQ(sem->recovered(), 2u);
  next->release();
  mine->release();
  EXPECT_EQ(sem->available(), 3u);
}

TEST_F(Sync, HolderSemaphoreReleaseWakesAWaiter) {
  auto* sem = must(tether::shared_new<tether::HolderSemaphore>(1));
  auto p = sem->acquire();
  TT_ASSERT_OK(p);
  auto waiter = spawn([&] { return sem->acquire(30s) ? 0 : 1; });
  std::this_thread::sleep_for(20ms);
  p->release();
  EXPECT_EQ(must(waiter.wait(30s)).code(), 0);
}

// ---------------------------------------------------------------- Barrier

TEST_F(Sync, BarrierReleasesAllPartiesGenerationAfterGeneration) {
  auto* b = must(tether::shared_new<tether::Barrier>(3));
  auto* last = must(tether::shared_new<std::atomic<int>>(0));
  auto party = [&] {
    auto p = b->join();
    if (!p) return 1;
    for (int round = 0; round < 50; ++round) {
      auto i = p->arrive_and_wait(30s);
      if (!i) return 2;
      if (*i == 2) last->fetch_add(1);
    }
    return 0;
  };
  auto a = spawn(party);
  auto c = spawn(party);
  EXPECT_EQ(party(), 0);
  EXPECT_EQ(must(a.wait(30s)).code(), 0);
  EXPECT_EQ(must(c.wait(30s)).code(), 0);
  EXPECT_EQ(last->load(), 50);  // one last arrival per generation
  EXPECT_FALSE(b->broken());
}

TEST_F(Sync, BarrierPartyKilledBreaksItForTheOthersAndResetMendsIt) {
  auto* b = must(tether::shared_new<tether::Barrier>(3));
  Flag joined;
  auto doomed = spawn([&] {
    auto p = b->join();
    if (!p) return 1;
    joined.send();
    ::pause();  // never arrives
    return 0;
  });
  ASSERT_TRUE(joined.await());
  auto other = spawn([&] {
    auto p = b->join();
    if (!p) return 1;
    joined.send();
    auto r = p->arrive_and_wait(30s);
    return !r && r.error() == tether::errc::broken_barrier ? 0 : 2;
  });
  ASSERT_TRUE(joined.await());
  auto me = b->join();
  TT_ASSERT_OK(me);
  TT_EXPECT_ERROR(b->join(), std::errc::device_or_resource_busy);
  std::this_thread::sleep_for(20ms);
  auto t0 = std::chrono::steady_clock::now();
  kill_and_reap(doomed);
  TT_EXPECT_ERROR(me->arrive_and_wait(30s), tether::errc::broken_barrier);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(must(other.wait(30s)).code(), 0);
  EXPECT_TRUE(b->broken());
  // Mended, with new parties in the dead ones' places.
  b->reset();
  EXPECT_FALSE(b->broken());
  auto p2 = spawn([&] {
    auto p = b->join();
    return p && p->arrive_and_wait(30s) ? 0 : 1;
  });
  auto p3 = spawn([&] {
    auto p = b->join();
    return p && p->arrive_and_wait(30s) ? 0 : 1;
  });
  TT_ASSERT_OK(me->arrive_and_wait(30s));
  EXPECT_EQ(must(p2.wait(30s)).code(), 0);
  EXPECT_EQ(must(p3.wait(30s)).code(), 0);
}

TEST_F(Sync, BarrierNewcomerInADeadArrivedPartysPlaceBreaksTheGeneration) {
  struct Shared {
    tether::Barrier barrier{3};
    std::atomic<int> arriving{0};
  };
  auto* s = must(tether::shared_new<Shared>());
  auto doomed = spawn([&] {
    auto p = s->barrier.join();
    if (!p) return 1;
    s->arriving.store(1);
    (void)p->arrive_and_wait(30s);  // counted, then killed while waiting
    return 2;
  });
  while (s->arriving.load() == 0) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(20ms);
  kill_and_reap(doomed);
  // Its arrival must not count for the newcomer's: the generation breaks.
  auto newcomer = s->barrier.join();
  TT_ASSERT_OK(newcomer);
  EXPECT_TRUE(s->barrier.broken());
  TT_EXPECT_ERROR(newcomer->arrive_and_wait(1s), tether::errc::broken_barrier);
}

TEST_F(Sync, BarrierTimeoutBreaksIt) {
  auto* b = must(tether::shared_new<tether::Barrier>(2));
  auto p = b->join();
  TT_ASSERT_OK(p);
  TT_EXPECT_ERROR(p->arrive_and_wait(20ms), std::errc::timed_out);
  EXPECT_TRUE(b->broken());
  TT_EXPECT_ERROR(p->arrive_and_wait(20ms), tether::errc::broken_barrier);
  tether::Barrier::Party none;
  TT_EXPECT_ERROR(none.arrive_and_wait(), std::errc::invalid_argument);
}

// ---------------------------------------------------------------- POSIX semaphores

TEST_F(Sync, SemaphoreOfThreeAdmitsAtMostThreeOfFive) {
  struct Shared {
    tether::Semaphore sem{3};
    std::atomic<int> inside{0}, most{0};
  };
  auto* s = must(tether::shared_new<Shared>());
  auto worker = [&] {
    for (int i = 0; i < 200; ++i) {
      if (!s->sem.wait(30s)) return 1;
      int now = s->inside.fetch_add(1) + 1;
      int seen = s->most.load();
      while (now > seen && !s->most.compare_exchange_weak(seen, now)) {
      }
      std::this_thread::yield();
      s->inside.fetch_sub(1);
      if (!s->sem.post()) return 2;
    }
    return 0;
  };
  std::vector<tether::Process> kids;
  kids.reserve(5);
  for (int i = 0; i < 5; ++i) kids.push_back(spawn(worker));
  for (auto& k : kids) EXPECT_EQ(must(k.wait(60s)).code(), 0);
  EXPECT_LE(s->most.load(), 3);
  EXPECT_GE(s->most.load(), 1);
  EXPECT_EQ(s->sem.value(), 3);
}

TEST_F(Sync, SemaphoreTryAndDeadlineForms) {
  tether::Semaphore sem(1);
  TT_ASSERT_OK(sem.try_wait());
  TT_EXPECT_ERROR(sem.try_wait(), std::errc::resource_unavailable_try_again);
  TT_EXPECT_ERROR(sem.wait(20ms), std::errc::timed_out);
  TT_EXPECT_ERROR(sem.wait(20ms, 1000), std::errc::timed_out);
  TT_ASSERT_OK(sem.post());
  TT_ASSERT_OK(sem.wait(tether::Deadline::immediate(), 10));
  EXPECT_EQ(sem.value(), 0);
}

TEST_F(Sync, NamedSemaphoreIsOwnedLeasedAndExactlyTheModeAsked) {
  auto name = tether_test::unique_posix_name("tt-sem");
  mode_t old = ::umask(077);
  auto sem = tether::NamedSemaphore::create(name, 0, 0640);
  ::umask(old);
  TT_ASSERT_OK(sem);
  std::string file = "/dev/shm/sem." + name.substr(1);
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  TT_EXPECT_ERROR(tether::NamedSemaphore::create(name, 0), std::errc::file_exists);
  EXPECT_EQ(run_in_child([&] {
              auto other = tether::NamedSemaphore::open(name);
              if (!other || other->owns()) return 1;
              return other->post() ? 0 : 2;
            }),
            0);
  TT_ASSERT_OK(sem->wait(10s));
  auto list = must(tether::posix_shared_memory_list());
  auto it = std::find_if(list.begin(), list.end(),
                         [&](const auto& i) { return i.name == "/sem." + name.substr(1); });
  ASSERT_NE(it, list.end());
  EXPECT_TRUE(it->held);
  TT_EXPECT_ERROR(tether::NamedSemaphore::open(tether_test::unique_posix_name("tt-none")),
                  std::errc::no_such_file_or_directory);
  TT_EXPECT_ERROR(tether::NamedSemaphore::create("bad", 0), std::errc::invalid_argument);
  TT_ASSERT_OK(sem->close());
  TT_EXPECT_ERROR(sem->post(), std::errc::bad_file_descriptor);
}

// ---------------------------------------------------------------- System V

TEST_F(Sync, NamedSemaphoreRefusesAFileTooShortToBeOne) {
  auto name = tether_test::unique_posix_name("tt-sem-short");
  std::string file = "/dev/shm/sem." + name.substr(1);
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  auto s = tether::NamedSemaphore::open(name);  // a post would raise SIGBUS
  EXPECT_EQ(::unlink(file.c_str()), 0);         // first: a failed check must not leave it
  TT_ASSERT_ERROR(s, std::errc::invalid_argument);
  EXPECT_NE(s.error().message().find("not a semaphore"), std::string::npos);
}

TEST_F(Sync, SysvSetAppliesOperationsAllOrNothing) {
  unsigned short init[] = {1, 0};
  auto set = must(tether::SysvSemaphores::create(tether_test::unique_key(), init));
  EXPECT_EQ(set.size(), 2u);
  EXPECT_EQ(must(set.values()), (std::vector<unsigned short>{1, 0}));
  tether::SysvSemaphores::Op both[] = {{0, -1}, {1, -1}};
  TT_EXPECT_ERROR(set.try_apply(both), std::errc::resource_unavailable_try_again);
  EXPECT_EQ(must(set.value(0)), 1);  // nothing taken
  TT_EXPECT_ERROR(set.apply(both, 20ms), std::errc::timed_out);
  TT_ASSERT_OK(set.post(1));
  TT_ASSERT_OK(set.apply(both, 1s));
  EXPECT_EQ(must(set.values()), (std::vector<unsigned short>{0, 0}));
  TT_ASSERT_OK(set.wait_zero(0, 1s));
  TT_ASSERT_OK(set.set_value(1, 5));
  EXPECT_EQ(must(set.value(1)), 5);
  EXPECT_EQ(must(set.last_pid(0)), ::getpid());
  TT_EXPECT_ERROR(set.value(2), std::errc::file_too_large);
  tether::SysvSemaphores::Op bad[] = {{7, 1}};
  TT_EXPECT_ERROR(set.apply(bad), std::errc::file_too_large);
  auto st = must(set.stats());
  EXPECT_EQ(st.count, 2u);
  EXPECT_EQ(st.mode, 0600u);
}

TEST_F(Sync, SysvUndoGivesBackWhatADeadProcessTook) {
  unsigned short init[] = {2};
  auto key = tether_test::unique_key();
  auto set = must(tether::SysvSemaphores::create(key, init));
  Flag took;
  auto child = spawn([&] {
    auto s = tether::SysvSemaphores::open(key);
    if (!s || !s->wait(0, 2)) return 1;
    took.send();
    ::pause();
    return 0;
  });
  ASSERT_TRUE(took.await());
  EXPECT_EQ(must(set.value(0)), 0);
  kill_and_reap(child);
  EXPECT_EQ(must(set.value(0)), 2);  // the kernel undid it
}

TEST_F(Sync, SysvCountsAreCheckedAndAFullFirstSemaphoreCanBeMade) {
  unsigned short init[] = {32767};
  auto set = must(tether::SysvSemaphores::create(tether::SysvSemaphores::private_key, init));
  EXPECT_EQ(must(set.value(0)), 32767);
  TT_EXPECT_ERROR(set.post(0, 0), std::errc::invalid_argument);
  TT_EXPECT_ERROR(set.post(0, -3), std::errc::invalid_argument);
  TT_EXPECT_ERROR(set.wait(0, -3), std::errc::invalid_argument);
  TT_EXPECT_ERROR(set.post(0), std::errc::result_out_of_range);  // SEMVMX
  EXPECT_EQ(must(set.value(0)), 32767);
}

TEST_F(Sync, SysvPostWithoutUndoOutlivesThePoster) {
  unsigned short init[] = {0, 0};
  auto set = must(tether::SysvSemaphores::create(tether::SysvSemaphores::private_key, init));
  EXPECT_EQ(run_in_child([&] { return set.post(0) && set.post(1, 1, false) ? 0 : 1; }), 0);
  EXPECT_EQ(must(set.value(0)), 0);  // undone when the poster exited
  EXPECT_EQ(must(set.value(1)), 1);  // a signal that stays
  TT_ASSERT_OK(set.wait(1, 1, 1s, false));
}

TEST_F(Sync, SysvRemovalWakesWaitersWithEidrm) {
  unsigned short init[] = {0};
  auto set = must(tether::SysvSemaphores::create(tether::SysvSemaphores::private_key, init));
  int id = set.id();
  auto waiter = spawn([id] {
    auto s = tether::SysvSemaphores::from_id(id);
    if (!s) return 1;
    auto r = s->wait(0, 1, 30s);
    return !r && r.error() == std::errc::identifier_removed ? 0 : 2;
  });
  // And with no deadline (the inline path): EIDRM too, not a retry's EINVAL.
  auto forever = spawn([id] {
    auto s = tether::SysvSemaphores::from_id(id);
    if (!s) return 1;
    auto r = s->wait(0);
    return !r && r.error() == std::errc::identifier_removed ? 0 : 2;
  });
  for (int i = 0; i < 3000 && must(set.waiting(0)) < 2; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(must(set.waiting(0)), 2);
  EXPECT_EQ(must(set.waiting_zero(0)), 0);
  TT_ASSERT_OK(set.remove());
  EXPECT_EQ(must(waiter.wait(30s)).code(), 0);
  EXPECT_EQ(must(forever.wait(30s)).code(), 0);
}

TEST_F(Sync, SysvOpenWaitsForTheCreatorToFinish) {
  auto key = tether_test::unique_key();
  // Made by hand, half-way: semget without the first semop.
  int id = ::semget(key.get(), 1, IPC_CREAT | IPC_EXCL | 0600);
  ASSERT_GE(id, 0);
  auto half = tether::SysvSemaphores::open(key, 30ms);
  TT_EXPECT_ERROR(half, std::errc::timed_out);
  ::semctl(id, 0, IPC_RMID);
  TT_EXPECT_ERROR(tether::SysvSemaphores::open(tether_test::unique_key()),
                  std::errc::no_such_file_or_directory);
  unsigned short init[] = {1};
  auto made = must(tether::SysvSemaphores::create(key, init));
  TT_EXPECT_ERROR(tether::SysvSemaphores::create(key, init), std::errc::file_exists);
  TT_ASSERT_OK(tether::SysvSemaphores::open(key, 1s));
  TT_EXPECT_ERROR(tether::SysvSemaphores::create(tether_test::unique_key(), {}),
                  std::errc::invalid_argument);
}
