#include <poll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "support.hpp"

using namespace std::chrono_literals;
using tether::PosixQueue;
using tether::SysvQueue;
using tether_test::bytes;
using tether_test::Clean;
using tether_test::must;

namespace {
std::string queue_name() {
  return "/" + tether_test::unique_name("tether-mq");
}
}  // namespace

// ---------------------------------------------------------------- POSIX

using PosixMq = Clean;

TEST_F(PosixMq, HighestPriorityFirstThenOldest) {
  auto q = must(PosixQueue::create(queue_name()));
  TT_ASSERT_OK(q.send("low", 1));
  TT_ASSERT_OK(q.send("high-a", 9));
  TT_ASSERT_OK(q.send("mid", 5));
  TT_ASSERT_OK(q.send("high-b", 9));
  EXPECT_EQ(must(q.attributes()).depth, 4);
  std::vector<std::pair<std::string, unsigned>> got;
  for (int i = 0; i < 4; ++i) {
    auto m = must(q.recv(5s));
    got.emplace_back(std::string(m.text()), m.priority);
  }
  EXPECT_EQ(got, (std::vector<std::pair<std::string, unsigned>>{
                     {"high-a", 9}, {"high-b", 9}, {"mid", 5}, {"low", 1}}));
}

TEST_F(PosixMq, FullAndEmptyInNonBlockingAndDeadlineForms) {
  auto q = must(PosixQueue::create(queue_name(), {.capacity = 2, .message_size = 64}));
  auto attr = must(q.attributes());
  EXPECT_EQ(attr.capacity, 2);
  EXPECT_EQ(attr.message_size, 64);
  EXPECT_EQ(q.try_recv().error(), std::errc::resource_unavailable_try_again);
  EXPECT_EQ(q.recv(20ms).error(), std::errc::timed_out);
  TT_ASSERT_OK(q.try_send(bytes("1")));
  TT_ASSERT_OK(q.try_send(bytes("2")));
  EXPECT_EQ(q.try_send(bytes("3")).error(), std::errc::resource_unavailable_try_again);
  EXPECT_EQ(q.send("3", 0, 20ms).error(), std::errc::timed_out);
}

TEST_F(PosixMq, TooLargeIsAnErrorNotTruncation) {
  auto q = must(PosixQueue::create(queue_name(), {.capacity = 2, .message_size = 64}));
  auto r = q.send(std::string(65, 'x'));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), std::errc::message_size);
  EXPECT_NE(r.error().message().find("a 65-byte message exceeds its message size of 64"),
            std::string::npos);
  EXPECT_EQ(must(q.attributes()).depth, 0);
}

// An empty message is a message (a span with no storage must work too).
TEST_F(PosixMq, EmptyMessagesAreDelivered) {
  auto q = must(PosixQueue::create(queue_name(), {.capacity = 2, .message_size = 64}));
  TT_ASSERT_OK(q.send(std::span<const std::byte>(), 3));
  TT_ASSERT_OK(q.try_send(std::span<const std::byte>()));
  EXPECT_EQ(must(q.attributes()).depth, 2);
  auto m = must(q.recv(5s));
  EXPECT_TRUE(m.data.empty());
  EXPECT_EQ(m.priority, 3u);
}

TEST_F(PosixMq, DescriptorIsPollable) {
  auto q = must(PosixQueue::create(queue_name()));
  pollfd p{q.fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);
  TT_ASSERT_OK(q.send("wake"));
  EXPECT_EQ(::poll(&p, 1, 1000), 1);
}

TEST_F(PosixMq, BetweenProcessesByName) {
  auto q = must(PosixQueue::create(queue_name()));
  std::string name = q.name();
  auto child = must(tether::fork([&] {
    auto mine = PosixQueue::open(name);  // an unrelated-style open by name
    if (!mine || mine->owns()) return 1;
    return mine->send("from the child", 3) ? 0 : 2;
  }));
  auto m = must(q.recv(10s));
  EXPECT_EQ(m.text(), "from the child");
  EXPECT_EQ(m.priority, 3u);
  EXPECT_TRUE(must(child.wait(10s)).success());
}

TEST_F(PosixMq, OwnerRemovesTheNameAndBadNamesAreRefused) {
  std::string name = queue_name();
  {
    auto q = must(PosixQueue::create(name));
    EXPECT_TRUE(q.owns());
    EXPECT_EQ(PosixQueue::create(name).error(), std::errc::file_exists);
  }
  EXPECT_EQ(PosixQueue::open(name).error(), std::errc::no_such_file_or_directory);
  for (std::string bad : {"noslash", "/a/b", "/"}) {
    auto r = PosixQueue::create(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error(), std::errc::invalid_argument);
  }
  auto huge = PosixQueue::create(queue_name(), {.capacity = 1 << 20, .message_size = 1 << 20});
  if (::geteuid() != 0) {  // root may exceed the soft limits
    ASSERT_FALSE(huge);
    EXPECT_NE(huge.error().message().find("limits"), std::string::npos);
  }
}

// ---------------------------------------------------------------- System V

using SysvMq = Clean;

TEST_F(SysvMq, TheKernelsThreeSelectionRules) {
  auto q = must(SysvQueue::create(SysvQueue::private_key));
  for (auto [type, text] : std::vector<std::pair<long, std::string>>{
           {3, "three"}, {1, "one-a"}, {2, "two"}, {1, "one-b"}, {5, "five"}}) {
    TT_ASSERT_OK(q.send(type, text));
  }
  auto first = must(q.recv(0, 5s));  // 0: the first message, whatever its type
  EXPECT_EQ(first.type, 3);
  EXPECT_EQ(first.text(), "three");
  EXPECT_EQ(must(q.recv(1, 5s)).text(), "one-a");  // > 0: the first of that type
  auto low = must(q.recv(-2, 5s));                 // < 0: the lowest type <= 2
  EXPECT_EQ(low.type, 1);
  EXPECT_EQ(low.text(), "one-b");
  EXPECT_EQ(must(q.recv(-5, 5s)).type, 2);
  EXPECT_EQ(must(q.recv(0, 5s)).text(), "five");
}

TEST_F(SysvMq, EmptyAndMissingTypeInNonBlockingAndDeadlineForms) {
  auto q = must(SysvQueue::create(SysvQueue::private_key));
  EXPECT_EQ(q.try_recv().error(), std::errc::resource_unavailable_try_again);
  TT_ASSERT_OK(q.send(4, "four"));
  EXPECT_EQ(q.try_recv(7).error(), std::errc::resource_unavailable_try_again);  // none of type 7
  EXPECT_EQ(q.recv(7, 30ms).error(), std::errc::timed_out);
  EXPECT_EQ(must(q.try_recv(4)).text(), "four");
}

TEST_F(SysvMq, StatsAndLimits) {
  auto q = must(SysvQueue::create(SysvQueue::private_key));
  TT_ASSERT_OK(q.send(1, "12345"));
  TT_ASSERT_OK(q.send(1, "678"));
  auto st = must(q.stats());
  EXPECT_EQ(st.depth, 2u);
  EXPECT_EQ(st.bytes, 8u);
  EXPECT_EQ(st.last_sender, ::getpid());
  EXPECT_GT(st.max_bytes, 0u);
  auto big = q.send(1, std::string(tether::sysv_max_message() + 1, 'b'));
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error(), std::errc::message_size);
  EXPECT_NE(big.error().message().find("/proc/sys/kernel/msgmax"), std::string::npos);
  EXPECT_EQ(q.send(0, "x").error(), std::errc::invalid_argument);
}

TEST_F(SysvMq, KeyFromPathSharedWithAnotherProcess) {
  auto file = std::filesystem::temp_directory_path() / tether_test::unique_name("tether-ftok");
  std::ofstream(file) << "key anchor";
  auto key = must(SysvQueue::key_from_path(file, 7));
  {
    auto q = must(SysvQueue::create(key));
    EXPECT_EQ(SysvQueue::create(key).error(), std::errc::file_exists);
    auto child = must(tether::fork([&] {
      auto mine = SysvQueue::open(key);
      return mine && !mine->owns() && mine->send(9, "by key") ? 0 : 1;
    }));
    auto m = must(q.recv(9, 10s));
    EXPECT_EQ(m.text(), "by key");
    EXPECT_TRUE(must(child.wait(10s)).success());
  }
  EXPECT_EQ(SysvQueue::open(key).error(),
            std::errc::no_such_file_or_directory);  // removed by its owner
  EXPECT_EQ(SysvQueue::key_from_path(file, 0).error(), std::errc::invalid_argument);
  std::filesystem::remove(file);
}

TEST_F(SysvMq, RemovalWakesABlockedReceiver) {
  auto q = must(SysvQueue::create(SysvQueue::private_key));
  int id = q.id();
  auto child = must(tether::fork([&] {
    auto r = SysvQueue::from_id(id).recv(0);  // blocks in the kernel
    return !r && r.error() == std::errc::identifier_removed ? 0 : 1;
  }));
  // Remove only once the child sleeps in msgrcv: /proc/PID/syscall starts
  // with the number of the system call a blocked task is in.
  bool blocked = false;
  for (int i = 0; i < 2000 && !blocked; ++i) {
    std::ifstream in("/proc/" + std::to_string(child.pid()) + "/syscall");
    long number = -1;
    blocked = (in >> number) && number == SYS_msgrcv;
    if (!blocked) std::this_thread::sleep_for(5ms);
  }
  ASSERT_TRUE(blocked) << "the child never blocked in msgrcv";
  TT_ASSERT_OK(q.remove());
  EXPECT_TRUE(must(child.wait(10s)).success());
}

TEST_F(PosixMq, QueueMemoryLimitIsNamedInTheError) {
  // In a child, lower this process's queue memory limit below one queue.
  auto child = must(tether::fork([] {
    rlimit tiny{1000, 1000};
    if (::setrlimit(RLIMIT_MSGQUEUE, &tiny) != 0) return 2;
    auto q = PosixQueue::create(queue_name());
    if (q) return 3;
    std::printf("%s\n", q.error().message().c_str());
    return q.error() == std::errc::too_many_files_open &&
                   q.error().message().find("RLIMIT_MSGQUEUE") != std::string::npos
               ? 0
               : 1;
  }));
  EXPECT_EQ(must(child.wait(10s)).code(), 0);
}
