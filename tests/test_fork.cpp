#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "support.hpp"

using namespace std::chrono_literals;
using tether_test::Clean;
using tether_test::helper;
using tether_test::must;

using Fork = Clean;

TEST_F(Fork, RunsAFunctionAndReturnsItsCode) {
  auto p = must(tether::fork([] { return 42; }));
  EXPECT_EQ(must(p.wait(10s)).code(), 42);
}

TEST_F(Fork, TwoReturns) {
  auto pipe = must(tether::Pipe::create());
  auto forked = must(tether::fork_here());
  if (forked.in_child()) {
    std::string msg = "child " + std::to_string(getpid());
    (void)pipe.writer.write_all(msg);
    _exit(0);
  }
  TT_ASSERT_OK(pipe.writer.close());
  EXPECT_EQ(must(pipe.reader.read_all(10s)), "child " + std::to_string(forked.process.pid()));
  EXPECT_TRUE(must(forked.process.wait(10s)).success());
}

TEST_F(Fork, MemoryIsIndependentAfterFork) {
  int value = 1;
  auto pipe = must(tether::Pipe::create());
  auto p = must(tether::fork([&] {
    value = 2;  // the child's copy
    return value == 2 ? 0 : 1;
  }));
  EXPECT_TRUE(must(p.wait(10s)).success());
  EXPECT_EQ(value, 1);
}

TEST_F(Fork, ExceptionInChildExitsWith70) {
  auto p = must(tether::fork([]() -> int { throw std::runtime_error("boom"); }));
  EXPECT_EQ(must(p.wait(10s)).code(), 70);
}

TEST_F(Fork, RefusedWhileOtherThreadsRun) {
  std::mutex m;
  std::condition_variable cv;
  bool stop = false;
  std::thread t([&] {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return stop; });
  });
  auto refused = tether::fork([] { return 0; });
  ASSERT_FALSE(refused);
  TT_EXPECT_ERROR(refused, tether::errc::unsafe_fork);
  EXPECT_NE(refused.error().message().find("2 threads"), std::string::npos)
      << refused.error().message();
  EXPECT_EQ(must(tether::thread_count()), 2);
  // Explicitly allowed: the child only calls _exit.
  auto allowed = must(tether::fork(
      [] {
        _exit(5);
        return 0;
      },
      {.allow_threads = true}));
  EXPECT_EQ(must(allowed.wait(10s)).code(), 5);
  {
    std::lock_guard lock(m);
    stop = true;
  }
  cv.notify_one();
  t.join();
}

TEST_F(Fork, ChildCopyOfAProcessNeverActsOnIt) {
  // The forked child inherits a copy of `sibling`; when that copy is
  // destroyed in the child, it must not kill or reap the parent's child.
  auto sibling = must(helper("sleep", {"20000"}).spawn());
  auto p = must(tether::fork([&] {
    tether::Process copy = std::move(sibling);  // destroyed at end of scope, in the child
    return 0;
  }));
  EXPECT_TRUE(must(p.wait(10s)).success());
  auto still = must(sibling.try_wait());
  EXPECT_FALSE(still) << "the child's copy killed the sibling";
  EXPECT_EQ(must(sibling.kill()).signal(), SIGKILL);
}
