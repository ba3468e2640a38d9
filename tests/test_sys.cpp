#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "support.hpp"

using namespace std::chrono_literals;
using tether::Deadline;
using tether::Error;
using tether::Fd;
using tether_test::Clean;
using tether_test::must;

using Sys = Clean;

TEST_F(Sys, ErrorMessageNamesOperationObjectAndErrno) {
  Error e = Error::from_errno(ENXIO, "open FIFO /run/x/control for writing");
  EXPECT_EQ(e.message(), "open FIFO /run/x/control for writing: No such device or address (ENXIO)");
  EXPECT_EQ(e, std::errc::no_such_device_or_address);
  EXPECT_EQ(e.sys_errno(), ENXIO);
  Error t(tether::errc::end_of_stream, "read pipe");
  EXPECT_EQ(t, tether::errc::end_of_stream);
  EXPECT_EQ(t.sys_errno(), 0);
  EXPECT_EQ(t.message(), "read pipe: end of stream (the peer closed its end)");
  EXPECT_EQ(t.code().category().name(), std::string("tether"));
}

TEST_F(Sys, FailAddsOuterContext) {
  auto inner = Error::from_errno(EACCES, "open /x");
  auto outer = tether::fail(inner, "spawn ls");
  EXPECT_EQ(outer.error().message(), "spawn ls: open /x: Permission denied (EACCES)");
}

TEST_F(Sys, NamesOfErrnosAndSignals) {
  EXPECT_EQ(tether::errno_name(ENOENT), "ENOENT");
  EXPECT_EQ(tether::errno_name(0), "");
  EXPECT_EQ(tether::signal_name(SIGKILL), "SIGKILL");
  EXPECT_EQ(tether::signal_name(SIGRTMIN + 2), "SIGRTMIN+2");
}

TEST_F(Sys, FdOwnsAndCloses) {
  int raw;
  {
    Fd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    raw = fd.get();
    Fd moved = std::move(fd);
    EXPECT_FALSE(fd.valid());  // NOLINT(bugprone-use-after-move): documented state
    EXPECT_EQ(moved.get(), raw);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);  // closed by the destructor
  EXPECT_EQ(errno, EBADF);
}

TEST_F(Sys, FdReleaseCloseDuplicateNonblocking) {
  Fd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  auto dup = must(fd.duplicate());
  EXPECT_NE(dup.get(), fd.get());
  EXPECT_EQ(::fcntl(dup.get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  EXPECT_FALSE(must(fd.nonblocking()));
  TT_ASSERT_OK(fd.set_nonblocking(true));
  EXPECT_TRUE(must(dup.nonblocking()));  // same open file description
  int raw = dup.release();
  EXPECT_FALSE(dup.valid());
  EXPECT_EQ(::close(raw), 0);
  TT_ASSERT_OK(fd.close());
  EXPECT_FALSE(fd.valid());
  TT_ASSERT_OK(fd.close());  // closing an empty Fd is a no-op

  Fd bogus(1000000);
  auto r = bogus.close();
  ASSERT_FALSE(r);
  TT_EXPECT_ERROR(r, std::errc::bad_file_descriptor);
  EXPECT_EQ(r.error().message(), "close fd 1000000: Bad file descriptor (EBADF)");
}

TEST_F(Sys, DeadlineForms) {
  EXPECT_TRUE(Deadline::never().is_never());
  EXPECT_FALSE(Deadline::never().expired());
  EXPECT_EQ(Deadline::never().remaining(), Deadline::clock::duration::max());
  EXPECT_TRUE(Deadline::immediate().expired());
  EXPECT_EQ(Deadline::immediate().remaining(), Deadline::clock::duration::zero());
  Deadline zero = 0ms;
  EXPECT_TRUE(zero.expired());
  Deadline soon = 10s;
  EXPECT_FALSE(soon.expired());
  EXPECT_GT(soon.remaining(), 9s);
  Deadline huge = std::chrono::hours::max();  // no overflow: never
  EXPECT_TRUE(huge.is_never());
  EXPECT_EQ(min(soon, Deadline::never()).time_point(), soon.time_point());
}

TEST_F(Sys, WaitFdTimesOutAndSeesReadiness) {
  auto p = must(tether::make_pipe());
  auto r = tether::wait_fd(p.first.get(), POLLIN, 20ms, "test pipe");
  ASSERT_FALSE(r);
  TT_EXPECT_ERROR(r, std::errc::timed_out);
  EXPECT_EQ(r.error().message(), "wait for test pipe: Connection timed out (ETIMEDOUT)");
  ASSERT_EQ(::write(p.second.get(), "x", 1), 1);
  EXPECT_TRUE(must(tether::wait_fd(p.first.get(), POLLIN, 1s, "test pipe")) & POLLIN);
}

TEST_F(Sys, RetryEintrRetriesOnlyEintr) {
  int calls = 0;
  auto r = tether::retry_eintr([&] {
    ++calls;
    errno = calls < 3 ? EINTR : EBADF;
    return -1;
  });
  EXPECT_EQ(r, -1);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(errno, EBADF);
}

TEST_F(Sys, CountOpenFdsSeesNewDescriptors) {
  int before = must(tether::count_open_fds());
  {
    auto p = must(tether::make_pipe());
    EXPECT_EQ(must(tether::count_open_fds()), before + 2);
  }
  EXPECT_EQ(must(tether::count_open_fds()), before);
}
