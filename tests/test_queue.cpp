// The shared-memory queue: every form of put and get, zero-copy, close,
// named and anonymous, many to many, and participants killed -9.
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>
#include <set>
#include <thread>

#include "support.hpp"
#include "tether/queue.hpp"

using namespace std::chrono_literals;
using tether::Ends;
using tether::Queue;
using tether_test::bytes;
using tether_test::must;
using tether_test::run_in_child;

namespace {

class QueueTest : public tether_test::Clean {};

// Runs `body` in a fork child, which kills itself with SIGKILL (the death
// under test) by calling die() where it must die, with what it holds
// still alive; true if it died that way.
bool dies_by_sigkill(const std::function<void()>& body) {
  auto child = tether::fork([&] {
    body();
    return 1;  // did not reach die()
  });
  if (!child) return false;
  auto status = child->wait(60s);
  if (!status) {
    (void)child->kill();
    (void)child->wait();
    return false;
  }
  return status->signal() == SIGKILL;
}

void die() {
  ::raise(SIGKILL);
}

TEST_F(QueueTest, NamedQueueCarriesWholeMessagesInOrder) {
  auto name = tether_test::unique_posix_name("q");
  auto q = must(Queue::create(name, {.max_message = 1000}));
  auto r = must(Queue::open(name));
  TT_ASSERT_OK(q.put("hello"));
  TT_ASSERT_OK(q.put(""));
  TT_ASSERT_OK(q.put(std::string(1000, 'x')));
  TT_EXPECT_ERROR(q.put(std::string(1001, 'x')), std::errc::message_size);
  EXPECT_EQ(r.size(), 3u);
  EXPECT_FALSE(r.empty());
  EXPECT_EQ(must(r.get_string()), "hello");
  EXPECT_EQ(must(r.get_string()), "");
  EXPECT_EQ(must(r.get_string()), std::string(1000, 'x'));
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(q.stats().puts, 3u);
  EXPECT_EQ(q.stats().gets, 3u);
}

TEST_F(QueueTest, ValuesAndBuffers) {
  auto q = must(Queue::anonymous());
  struct Point {
    double x, y;
  };
  TT_ASSERT_OK(q.put_value(Point{1.5, -2}));
  auto p = must(q.get_value<Point>());
  EXPECT_EQ(p.x, 1.5);
  EXPECT_EQ(p.y, -2);
  TT_ASSERT_OK(q.put_value(7));
  TT_EXPECT_ERROR(q.get_value<Point>(), std::errc::bad_message);  // stays queued
  EXPECT_EQ(must(q.get_value<int>()), 7);
  TT_ASSERT_OK(q.put("abcdef"));
  std::array<std::byte, 4> small{};
  TT_EXPECT_ERROR(q.get(small), std::errc::message_size);
  std::vector<std::byte> buf;
  TT_ASSERT_OK(q.get_into(buf));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), buf.size()), "abcdef");
}

TEST_F(QueueTest, TryFormsAndDeadlines) {
  auto q = must(Queue::anonymous({.max_message = 64, .capacity_messages = 2}));
  auto empty = q.try_get();
  TT_ASSERT_ERROR(empty, std::errc::resource_unavailable_try_again);
  // A would-block is worded only when it reaches the caller (queue.cpp).
  EXPECT_NE(empty.error().message().find("get from anonymous queue: it is empty"),
            std::string::npos)
      << empty.error().message();
  auto t0 = std::chrono::steady_clock::now();
  TT_EXPECT_ERROR(q.get(50ms), std::errc::timed_out);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 50ms);
  TT_ASSERT_OK(q.try_put(bytes("a")));
  TT_ASSERT_OK(q.try_put(bytes("b")));
  EXPECT_TRUE(q.full());
  auto full = q.try_put(bytes("c"));
  TT_ASSERT_ERROR(full, std::errc::resource_unavailable_try_again);
  EXPECT_NE(full.error().message().find("it holds 2 messages, its capacity"), std::string::npos)
      << full.error().message();
  TT_EXPECT_ERROR(q.put("c", 30ms), std::errc::timed_out);
  // Full by bytes rather than by count: the other wording.
  auto small = must(Queue::anonymous({.max_message = 1000, .capacity_bytes = 4096}));
  tether::Result<void> put_ok;
  for (int i = 0; i < 100 && (put_ok = small.try_put(bytes(std::string(1000, 'x')))); ++i) {
  }
  TT_ASSERT_ERROR(put_ok, std::errc::resource_unavailable_try_again);
  EXPECT_NE(put_ok.error().message().find("put on anonymous queue: it is full"), std::string::npos)
      << put_ok.error().message();
  EXPECT_EQ(must(q.get_string()), "a");
  EXPECT_FALSE(q.full());
  TT_ASSERT_OK(q.try_put(bytes("c")));
  EXPECT_EQ(must(q.get_string()), "b");
  EXPECT_EQ(must(q.get_string()), "c");
}

TEST_F(QueueTest, RingWrapsWithMessagesOfEverySize) {
  // A 4 KiB ring, messages of 0 to 1500 bytes: pads at the end of the ring
  // every few messages, each message checked whole.
  auto q = must(Queue::anonymous({.max_message = 1500, .capacity_bytes = 4096}));
  EXPECT_EQ(q.capacity_bytes(), 4096u);
  std::vector<std::byte> msg, got;
  std::uint32_t seed = 1;
  for (int i = 0; i < 5000; ++i) {
    seed = seed * 1103515245 + 12345;
    std::size_t n = (seed >> 8) % 1501;
    msg.resize(n);
    for (std::size_t k = 0; k < n; ++k) msg[k] = static_cast<std::byte>(i + k);
    TT_ASSERT_OK(q.try_put(msg));
    if (i % 3 != 2) {
      TT_ASSERT_OK(q.get_into(got));
      ASSERT_EQ(got, msg) << i;
    } else {
      TT_ASSERT_OK(q.get_into(got));
    }
  }
  EXPECT_TRUE(q.empty());
}

TEST_F(QueueTest, CloseDrainsThenEndOfStream) {
  auto q = must(Queue::anonymous());
  TT_ASSERT_OK(q.put("last"));
  q.close();
  EXPECT_TRUE(q.closed());
  TT_EXPECT_ERROR(q.put("more"), std::errc::broken_pipe);
  EXPECT_EQ(must(q.get_string()), "last");
  TT_EXPECT_ERROR(q.get(), tether::errc::end_of_stream);
  TT_EXPECT_ERROR(q.try_get(), tether::errc::end_of_stream);
}

TEST_F(QueueTest, CloseWakesASleepingConsumer) {
  auto q = must(Queue::anonymous());
  EXPECT_EQ(run_in_child([&] {
              std::this_thread::sleep_for(50ms);
              q.close();
              return 0;
            }),
            0);
  TT_EXPECT_ERROR(q.get(10s), tether::errc::end_of_stream);
}

TEST_F(QueueTest, LoansAndViewsAreZeroCopy) {
  auto q = must(Queue::anonymous({.max_message = 256}));
  {
    auto loan = must(q.loan(256));
    EXPECT_EQ(loan.size(), 256u);
    std::memcpy(loan.data(), "in place", 8);
    TT_ASSERT_OK(loan.commit(8));
  }
  {
    auto cancelled = must(q.loan(100));  // dropped: nothing is delivered
  }
  auto view = must(q.get_view());
  EXPECT_EQ(view.text(), "in place");
  TT_EXPECT_ERROR(q.try_get(), std::errc::resource_unavailable_try_again);
  // Views are released in any order; the space comes back once all are.
  TT_ASSERT_OK(q.put("b"));
  TT_ASSERT_OK(q.put("c"));
  auto vb = must(q.get_view());
  auto vc = must(q.get_view());
  EXPECT_EQ(vb.text(), "b");
  EXPECT_EQ(vc.text(), "c");
  vc.release();
  view.release();
  vb.release();
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.stats().abandoned_writes, 0u);
  // A loan bigger than max_message is refused.
  TT_EXPECT_ERROR(q.loan(257), std::errc::message_size);
}

TEST_F(QueueTest, ForkChildIsAParticipantOfItsOwn) {
  auto q = must(Queue::anonymous({.max_message = 64, .capacity_bytes = 4096}));
  constexpr int kCount = 20000;
  auto child = must(tether::fork([&] {
    for (int i = 0; i < kCount; ++i)
      if (!q.put_value(i)) return 1;
    return 0;
  }));
  for (int i = 0; i < kCount; ++i) {
    auto v = q.get_value<int>(10s);
    ASSERT_TRUE(v.has_value()) << v.error().message();
    ASSERT_EQ(*v, i);
  }
  auto st = must(child.wait(10s));
  EXPECT_TRUE(st.success()) << st.describe();
}

TEST_F(QueueTest, UnrelatedHandlesByName) {
  auto name = tether_test::unique_posix_name("q");
  auto q = must(Queue::create(name, {.max_message = 128}));
  auto child = must(tether::fork([&] {
    auto mine = Queue::open(name);  // opened by name, as another program would
    if (!mine) return 2;
    for (int i = 0; i < 100; ++i)
      if (!mine->put("m" + std::to_string(i))) return 1;
    return 0;
  }));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(must(q.get_string(10s)), "m" + std::to_string(i));
  EXPECT_TRUE(must(child.wait(10s)).success());
}

TEST_F(QueueTest, ManyToManyThreadsDeliverEachMessageOnce) {
  auto q = must(Queue::anonymous({.max_message = 64, .capacity_bytes = 8192}));
  constexpr int kProducers = 3, kConsumers = 3, kEach = 20000;
  std::vector<std::vector<int>> got(kConsumers);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  threads.reserve(kProducers + kConsumers);
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      auto mine = q.another();
      if (!mine) {
        ++failures;
        return;
      }
      for (int i = 0; i < kEach; ++i)
        if (!mine->put_value(p * kEach + i, 10s)) ++failures;
    });
  }
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      auto mine = q.another();
      if (!mine) {
        ++failures;
        return;
      }
      for (;;) {
        auto v = mine->get_value<int>(10s);
        if (!v) {
          if (!(v.error() == tether::errc::end_of_stream)) ++failures;
          return;
        }
        got[c].push_back(*v);
      }
    });
  }
  for (int p = 0; p < kProducers; ++p) threads[p].join();
  q.close();
  for (int c = 0; c < kConsumers; ++c) threads[kProducers + c].join();
  EXPECT_EQ(failures.load(), 0);
  std::vector<int> all;
  for (auto& g : got) {
    // Each producer's messages reach each consumer in the order they were put.
    std::vector<int> last(kProducers, -1);
    for (int v : g) {
      EXPECT_GT(v, last[v / kEach]);
      last[v / kEach] = v;
    }
    all.insert(all.end(), g.begin(), g.end());
  }
  std::sort(all.begin(), all.end());
  std::vector<int> want(std::size_t{kProducers} * kEach);
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(all, want);
}

TEST_F(QueueTest, AParticipantBelongsToItsThread) {
  auto q = must(Queue::anonymous());
  std::thread([&] { TT_EXPECT_ERROR(q.put("x"), std::errc::operation_not_permitted); }).join();
  std::thread([&] {
    auto mine = q.another();  // a participant of this thread
    ASSERT_TRUE(mine.has_value()) << mine.error().message();
    EXPECT_TRUE(mine->put("x").has_value());
  }).join();
  EXPECT_EQ(must(q.get_string()), "x");
}

TEST_F(QueueTest, OneConsumerIsRefusedASecondUntilTheFirstDies) {
  auto q = must(Queue::anonymous({.producers = Ends::one, .consumers = Ends::one}));
  TT_ASSERT_OK(q.put("one"));
  TT_ASSERT_OK(q.put("two"));
  // A child becomes the consumer, takes one message and dies holding the role.
  EXPECT_TRUE(dies_by_sigkill([&] {
    if (q.get_string(5s).value_or("") == "one") die();
  }));
  // Its death frees the role: this process takes it and the next message.
  EXPECT_EQ(must(q.get_string(5s)), "two");
  // And a second consumer is refused while this one lives.
  EXPECT_EQ(run_in_child([&] {
              auto r = q.try_get();
              return !r && r.error() == std::errc::device_or_resource_busy ? 0 : 1;
            }),
            0);
}

// ---------------------------------------------------------------- deaths

TEST_F(QueueTest, WriterKilledMidLoanIsSkippedAndCounted) {
  auto q = must(Queue::anonymous({.max_message = 64}));
  EXPECT_TRUE(dies_by_sigkill([&] {
    auto loan = q.loan(64);  // never committed
    if (!loan) return;
    std::memset(loan->data(), 'T', 32);  // half written
    if (q.put("after")) die();           // dies holding the loan
  }));
  EXPECT_EQ(must(q.get_string(5s)), "after");  // the torn one is never delivered
  EXPECT_EQ(q.stats().abandoned_writes, 1u);
  EXPECT_GE(q.stats().dead_participants, 1u);
  TT_EXPECT_ERROR(q.try_get(), std::errc::resource_unavailable_try_again);
}

TEST_F(QueueTest, ConsumerBlockedByADeadWritersLoanGoesOn) {
  auto q = must(Queue::anonymous({.max_message = 64}));
  auto [ready_r, ready_w] = must(tether::make_pipe());
  auto child = must(tether::fork([&, w = ready_w.get()] {
    auto loan = q.loan(8);
    if (!loan) return 1;
    if (::write(w, "r", 1) != 1) return 2;
    ::pause();  // killed here, loan open
    return 0;
  }));
  ready_w.reset();
  char b = 0;
  ASSERT_EQ(::read(ready_r.get(), &b, 1), 1);
  auto killer = std::thread([&] {
    std::this_thread::sleep_for(50ms);
    (void)child.kill();
  });
  // The get sleeps behind the open loan; the writer's death wakes it and the
  // loan is dropped, so the get then times out on an empty queue.
  TT_EXPECT_ERROR(q.get(1s), std::errc::timed_out);
  killer.join();
  (void)child.wait();
  EXPECT_EQ(q.stats().abandoned_writes, 1u);
  // And a message put afterwards is delivered at once.
  TT_ASSERT_OK(q.put("next"));
  EXPECT_EQ(must(q.get_string(1s)), "next");
}

TEST_F(QueueTest, ReaderKilledHoldingAViewGivesTheSpaceBack) {
  // A ring with room for a handful of messages: a view that was never
  // released would block producers for ever.
  auto q = must(Queue::anonymous({.max_message = 1000, .capacity_bytes = 4096}));
  TT_ASSERT_OK(q.put(std::string(1000, 'a')));
  EXPECT_TRUE(dies_by_sigkill([&] {
    auto view = q.get_view(5s);
    if (view) die();  // holding it
  }));
  // Fill it again, and again: the dead reader's record is reclaimed.
  for (int round = 0; round < 5; ++round) {
    TT_ASSERT_OK(q.put(std::string(1000, 'b'), 5s));
    TT_ASSERT_OK(q.put(std::string(1000, 'c'), 5s));
    EXPECT_EQ(must(q.get_string(5s)), std::string(1000, 'b'));
    EXPECT_EQ(must(q.get_string(5s)), std::string(1000, 'c'));
  }
  EXPECT_EQ(q.stats().reclaimed_views, 1u);
}

// A reader killed in the middle of copying a message out: the message is
// given back and the next get has it. The reader is stopped inside its
// copy for certain: its buffer is memory registered with userfaultfd(2)
// whose missing pages nobody ever supplies, so the copy waits in the page
// fault until it is killed.
namespace {

// Anonymous memory whose first touch blocks for ever (nullptr if the
// kernel does not let this process do it). For a child that is killed:
// the descriptor and the mapping go with it.
std::byte* memory_that_blocks(std::size_t bytes) {
  int uffd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY));
  if (uffd < 0) uffd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC));
  if (uffd < 0) return nullptr;
  uffdio_api api{.api = UFFD_API, .features = 0, .ioctls = 0};
  if (::ioctl(uffd, UFFDIO_API, &api) != 0) return nullptr;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  uffdio_register reg{};
  reg.range = {.start = reinterpret_cast<std::uint64_t>(p), .len = bytes};
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (::ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) return nullptr;
  return static_cast<std::byte*>(p);  // uffd stays open, never read
}

}  // namespace

TEST_F(QueueTest, ReaderKilledMidCopyHasItsMessageGivenBack) {
  if (run_in_child([] { return memory_that_blocks(4096) != nullptr ? 0 : 1; }) != 0)
    GTEST_SKIP() << "userfaultfd(2) is not allowed here";
  for (Ends consumers : {Ends::one, Ends::many}) {
    SCOPED_TRACE(consumers == Ends::one ? "one consumer" : "many consumers");
    auto q = must(Queue::anonymous({.max_message = 8192, .consumers = consumers}));
    const std::string first(8192, 'x'), second = "after it";
    TT_ASSERT_OK(q.put(first));
    TT_ASSERT_OK(q.put(second));
    auto reader = must(tether::fork([&] {
      std::byte* buf = memory_that_blocks(8192);
      if (buf == nullptr) return 2;
      (void)q.get(std::span(buf, 8192), 5s);  // stops in the copy
      return 3;
    }));
    // Taken (counted) once the reader is in its copy.
    for (int i = 0; i < 5000 && q.size() == 2; ++i) std::this_thread::sleep_for(1ms);
    ASSERT_EQ(q.size(), 1u);
    std::this_thread::sleep_for(20ms);
    auto st = must(reader.kill());
    EXPECT_EQ(st.signal(), SIGKILL) << st.describe();
    // Both arrive, whole. With one consumer, the role passes to this
    // process only after the dead one is cleaned up, so the message it was
    // copying comes first; with many, a get that finds the queue empty
    // looks for it.
    std::string a = must(q.get_string(5s)), b = must(q.get_string(5s));
    if (consumers == Ends::many && a == second) std::swap(a, b);
    EXPECT_TRUE(a == first) << a.size() << " bytes";
    EXPECT_TRUE(b == second) << b.size() << " bytes";
    EXPECT_TRUE(q.empty());
    EXPECT_EQ(q.stats().redelivered, 1u);
    EXPECT_EQ(q.stats().dead_participants, 1u);
    // The space is free again: the ring fills and drains as before.
    for (int i = 0; i < 20; ++i) TT_ASSERT_OK(q.put(first, 5s));
    for (int i = 0; i < 20; ++i) EXPECT_EQ(must(q.get_string(5s)).size(), first.size());
  }
}

TEST_F(QueueTest, ExplicitRecoverFindsTheDead) {
  auto q = must(Queue::anonymous());
  EXPECT_TRUE(dies_by_sigkill([&] {
    if (q.put("from the child")) die();
  }));
  auto n = must(q.recover());
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(must(q.get_string()), "from the child");  // a committed message survives its writer
}

// ---------------------------------------------------------------- hostile segments

TEST_F(QueueTest, OpeningWhatIsNotAQueueIsAClearError) {
  auto name = tether_test::unique_posix_name("notq");
  {
    auto seg = must(tether::PosixSharedMemory::create(name, std::size_t{64} * 1024));
    auto map = must(seg.map());
    std::memset(map.data(), 0x5a, map.size());
    TT_EXPECT_ERROR(Queue::open(name, 10ms), std::errc::invalid_argument);
  }
  {
    auto seg = must(tether::PosixSharedMemory::create(name, 16));
    TT_EXPECT_ERROR(Queue::open(name, 10ms), std::errc::invalid_argument);
  }
  {
    // A zeroed segment: a queue still being made, never finished.
    auto seg = must(tether::PosixSharedMemory::create(name, std::size_t{64} * 1024));
    TT_EXPECT_ERROR(Queue::open(name, 20ms), std::errc::timed_out);
  }
  TT_EXPECT_ERROR(Queue::open(name), std::errc::no_such_file_or_directory);
}

// Python's JoinableQueue: join() returns once every message put has been
// got and said done, by consumers in other processes.
TEST_F(QueueTest, JoinWaitsUntilEveryTaskIsDone) {
  auto q = must(Queue::anonymous({.max_message = 64, .capacity_messages = 8}));
  auto finished = must(tether::Value<int>::anonymous(0));
  EXPECT_TRUE(q.join(1ms).has_value());  // nothing put: nothing to wait for
  TT_EXPECT_ERROR(q.task_done(), std::errc::invalid_argument);
  std::vector<tether::Process> consumers;
  consumers.reserve(3);
  for (int c = 0; c < 3; ++c) {
    consumers.push_back(must(tether::fork([&] {
      for (;;) {
        auto m = q.get_value<int>(30s);
        if (!m) return m.error() == tether::errc::end_of_stream ? 0 : 2;
        ::usleep(2000);  // the work
        finished.fetch_add(1);
        if (!q.task_done()) return 3;
      }
    })));
  }
  for (int i = 0; i < 30; ++i) TT_ASSERT_OK(q.put_value(i, 10s));
  TT_EXPECT_ERROR(q.join(tether::Deadline::immediate()), std::errc::timed_out);
  TT_ASSERT_OK(q.join(30s));
  EXPECT_EQ(must(finished.load()), 30);
  EXPECT_EQ(q.unfinished_tasks(), 0u);
  EXPECT_TRUE(q.empty());
  q.close();
  for (auto& c : consumers) EXPECT_EQ(must(c.wait(60s)).code(), 0);
}

// A loan given back, or dropped, is no task and no message.
TEST_F(QueueTest, ACancelledLoanIsNoTaskAndNoMessage) {
  auto q = must(Queue::anonymous({.max_message = 64, .capacity_bytes = 4096}));
  {
    auto l = must(q.loan(10));
    l.cancel();
  }
  { auto dropped = must(q.loan(10)); }
  TT_ASSERT_OK(q.join(1s));
  EXPECT_EQ(q.unfinished_tasks(), 0u);
  EXPECT_EQ(q.stats().cancelled_loans, 2u);
  // Until a get has skipped them, size() still counts them (as it counts
  // a message being written).
  TT_EXPECT_ERROR(q.try_get(), std::errc::resource_unavailable_try_again);
  EXPECT_EQ(q.size(), 0u);
  // A participant that goes away with tasks open leaves none behind.
  TT_ASSERT_OK(q.put("job"));
  {
    auto other = must(q.another());
    TT_ASSERT_OK(other.get());
  }
  TT_ASSERT_OK(q.join(1s));
  EXPECT_EQ(q.stats().tasks_dropped, 1u);
  TT_EXPECT_ERROR(q.task_done(), std::errc::invalid_argument);  // this one got nothing
}

TEST_F(QueueTest, AConsumerThatDiesBeforeTaskDoneDoesNotHangJoin) {
  auto q = must(Queue::anonymous({.max_message = 64, .capacity_bytes = 4096}));
  for (int i = 0; i < 3; ++i) TT_ASSERT_OK(q.put_value(i));
  EXPECT_TRUE(dies_by_sigkill([&] {
    if (!q.get_value<int>(5s) || !q.get_value<int>(5s)) return;
    (void)q.task_done();  // one of its two
    die();
  }));
  EXPECT_EQ(q.unfinished_tasks(), 2u);  // its open one, and the one still queued
  TT_ASSERT_OK(q.get_value<int>());
  TT_ASSERT_OK(q.task_done());
  TT_ASSERT_OK(q.join(10s));  // finds the dead consumer and counts its task done
  EXPECT_EQ(q.stats().tasks_dropped, 1u);
  EXPECT_EQ(q.unfinished_tasks(), 0u);
}

// A name whose segment its maker has not sized yet is one being made:
// waited for (up to `ready`), not refused as too small.
TEST_F(QueueTest, AnEmptySegmentIsWaitedForThenTimesOut) {
  auto name = tether_test::unique_posix_name("q");
  int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  auto t0 = std::chrono::steady_clock::now();
  TT_EXPECT_ERROR(Queue::open(name, 50ms), std::errc::timed_out);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 50ms);
  ::close(fd);
  ::shm_unlink(name.c_str());
}

bool readable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1 && (p.revents & POLLIN) != 0;
}

// The pollable descriptor: readable once a get (or put) that would have
// blocked may succeed, from another process's put (or get), or a close.
TEST_F(QueueTest, ThePollableDescriptorTellsAPollLoop) {
  auto q = must(Queue::anonymous({.max_message = 64, .capacity_messages = 1}));
  int fd = must(q.fd());
  EXPECT_EQ(must(q.fd()), fd);  // one per participant
  EXPECT_FALSE(readable(fd, 0));
  TT_EXPECT_ERROR(q.try_get(), std::errc::resource_unavailable_try_again);  // arms it
  auto child = must(tether::fork([&] {
    ::usleep(50000);
    if (!q.put("ping")) return 2;
    ::usleep(50000);
    q.close();
    return 0;
  }));
  ASSERT_TRUE(readable(fd, 10000));
  auto got = must(q.try_get());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), got.size()), "ping");
  EXPECT_FALSE(readable(fd, 0));  // drained by the get
  TT_EXPECT_ERROR(q.try_get(), std::errc::resource_unavailable_try_again);
  ASSERT_TRUE(readable(fd, 10000));  // the close
  TT_EXPECT_ERROR(q.try_get(), tether::errc::end_of_stream);
  EXPECT_EQ(must(child.wait(10s)).code(), 0);

  // Writable: a full queue's try_put arms it; a get elsewhere wakes it.
  auto w = must(Queue::anonymous({.max_message = 64, .capacity_messages = 1}));
  int wfd = must(w.fd());
  TT_ASSERT_OK(w.try_put(bytes("one")));
  TT_EXPECT_ERROR(w.try_put(bytes("two")), std::errc::resource_unavailable_try_again);
  auto getter = must(tether::fork([&] {
    ::usleep(50000);
    return w.get(5s) ? 0 : 2;
  }));
  // One descriptor says "something changed": poll, try, and poll again on
  // would-block (its own put woke it once already).
  bool put = false;
  for (int i = 0; i < 10 && !put; ++i) {
    ASSERT_TRUE(readable(wfd, 10000));
    auto r = w.try_put(bytes("two"));
    if (!r) {
      ASSERT_EQ(r.error(), std::errc::resource_unavailable_try_again);
    }
    put = r.has_value();
  }
  EXPECT_TRUE(put);
  EXPECT_EQ(must(getter.wait(10s)).code(), 0);
}

TEST_F(QueueTest, ACorruptHeaderIsRefused) {
  auto name = tether_test::unique_posix_name("q");
  auto q = must(Queue::create(name, {.max_message = 64, .capacity_bytes = 4096}));
  auto seg = must(tether::PosixSharedMemory::open(name));
  auto map = must(seg.map());
  // Offsets of QueueHeader: magic 0, version 8, header_bytes 12, ready 16,
  // map_bytes 24, ring_offset 32, ring_bytes 40, max_message 48.
  std::uint64_t saved = 0;
  std::memcpy(&saved, map.data() + 40, 8);
  for (std::uint64_t bad : {std::uint64_t{3}, std::uint64_t{1} << 20, ~std::uint64_t{0}}) {
    std::memcpy(map.data() + 40, &bad, 8);
    TT_EXPECT_ERROR(Queue::open(name), tether::errc::bad_record);
  }
  std::memcpy(map.data() + 40, &saved, 8);
  std::uint64_t huge = std::uint64_t{1} << 30;
  std::memcpy(map.data() + 48, &huge, 8);
  TT_EXPECT_ERROR(Queue::open(name), tether::errc::bad_record);
  std::uint64_t ok = 64;
  std::memcpy(map.data() + 48, &ok, 8);
  // Told to map less than it holds, or a petabyte.
  std::memcpy(&saved, map.data() + 24, 8);
  for (std::uint64_t bad : {std::uint64_t{4096}, std::uint64_t{1} << 50}) {
    std::memcpy(map.data() + 24, &bad, 8);
    TT_EXPECT_ERROR(Queue::open(name), tether::errc::bad_record);
  }
  std::memcpy(map.data() + 24, &saved, 8);
  // Another magic: not a queue at all.
  std::uint64_t magic = 0;
  std::memcpy(&magic, map.data(), 8);
  std::uint64_t other = magic ^ 1;
  std::memcpy(map.data(), &other, 8);
  TT_EXPECT_ERROR(Queue::open(name), std::errc::invalid_argument);
  std::memcpy(map.data(), &magic, 8);
  auto again = must(Queue::open(name));
  TT_ASSERT_OK(again.put("fine"));
  EXPECT_EQ(must(q.get_string()), "fine");
}

TEST_F(QueueTest, ACorruptRecordIsAnErrorNotACrash) {
  auto q = must(Queue::anonymous({.max_message = 64, .capacity_bytes = 4096}));
  TT_ASSERT_OK(q.put("x"));
  auto map = must(tether::Mapping::map(q.memory_fd(), 0, q.memory_bytes(),
                                       tether::Access::read_write, "queue"));
  // The first record's span (after its 8-byte tag) made absurd.
  std::byte* ring = map.data() + (q.memory_bytes() - q.capacity_bytes());
  std::uint32_t span = 1u << 31;
  std::memcpy(ring + 8, &span, 4);
  TT_EXPECT_ERROR(q.try_get(), tether::errc::bad_record);
}

}  // namespace
