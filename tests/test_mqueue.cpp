#include <limits.h>
#include <mqueue.h>
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
  TT_EXPECT_ERROR(q.try_recv(), std::errc::resource_unavailable_try_again);
  TT_EXPECT_ERROR(q.recv(20ms), std::errc::timed_out);
  TT_ASSERT_OK(q.try_send(bytes("1")));
  TT_ASSERT_OK(q.try_send(bytes("2")));
  TT_EXPECT_ERROR(q.try_send(bytes("3")), std::errc::resource_unavailable_try_again);
  TT_EXPECT_ERROR(q.send("3", 0, 20ms), std::errc::timed_out);
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
    TT_EXPECT_ERROR(PosixQueue::create(name), std::errc::file_exists);
  }
  TT_EXPECT_ERROR(PosixQueue::open(name), std::errc::no_such_file_or_directory);
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
  TT_EXPECT_ERROR(q.try_recv(), std::errc::resource_unavailable_try_again);
  TT_ASSERT_OK(q.send(4, "four"));
  TT_EXPECT_ERROR(q.try_recv(7), std::errc::resource_unavailable_try_again);  // none of type 7
  TT_EXPECT_ERROR(q.recv(7, 30ms), std::errc::timed_out);
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
  TT_EXPECT_ERROR(q.send(0, "x"), std::errc::invalid_argument);
}

TEST_F(SysvMq, KeyFromPathSharedWithAnotherProcess) {
  auto file = std::filesystem::temp_directory_path() / tether_test::unique_name("tether-ftok");
  std::ofstream(file) << "key anchor";
  auto key = must(tether::SysvKey::from_path(file, 7));
  {
    auto q = must(SysvQueue::create(key));
    TT_EXPECT_ERROR(SysvQueue::create(key), std::errc::file_exists);
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
  TT_EXPECT_ERROR(tether::SysvKey::from_path(file, 0), std::errc::invalid_argument);
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

// ---------------------------------------------------------------- ownership (NamedObject)

// The name re-created by someone else (here: removed and made again behind
// the owner's back) holds another queue: the owner leaves it alone.
TEST_F(PosixMq, RemovalLeavesAReCreatedNameAlone) {
  std::string name = queue_name();
  {
    auto q = must(PosixQueue::create(name, {.capacity = 1, .message_size = 16}));
    ASSERT_EQ(::mq_unlink(name.c_str()), 0);
    auto other = must(PosixQueue::create(name, {.capacity = 1, .message_size = 16}));
    other.release();  // "someone else's": nobody here removes it
    TT_EXPECT_ERROR(q.remove(), std::errc::file_exists);
    EXPECT_FALSE(q.owns());
  }
  auto still = must(PosixQueue::open(name));
  TT_ASSERT_OK(still.remove());  // attached, and asked explicitly: removed
  TT_EXPECT_ERROR(PosixQueue::open(name), std::errc::no_such_file_or_directory);
}

TEST_F(PosixMq, ReleaseKeepsTheQueueAndMovesTransferIt) {
  std::string name = queue_name();
  {
    auto q = must(PosixQueue::create(name, {.capacity = 1, .message_size = 16}));
    q.release();
    EXPECT_FALSE(q.owns());
  }
  {
    auto kept = must(PosixQueue::open(name));
    EXPECT_FALSE(kept.owns());
    TT_ASSERT_OK(kept.remove());
  }
  auto first = must(PosixQueue::create(name, {.capacity = 1, .message_size = 16}));
  PosixQueue second = std::move(first);
  EXPECT_FALSE(first.owns());  // NOLINT(bugprone-use-after-move): the point of the test
  EXPECT_EQ(first.fd(), -1);   // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(second.owns());
  { PosixQueue gone = std::move(first); }  // a moved-from queue removes nothing
  TT_ASSERT_OK(second.send("still here"));
  PosixQueue third;
  third = std::move(second);
  EXPECT_EQ(must(third.recv(5s)).text(), "still here");
  EXPECT_TRUE(third.owns());
  TT_ASSERT_OK(third.close());  // closed, still owned: destroying it removes the name
  { PosixQueue end = std::move(third); }
  TT_EXPECT_ERROR(PosixQueue::open(name), std::errc::no_such_file_or_directory);
}

TEST_F(PosixMq, NameCheckIsTheOneForEveryPosixName) {
  TT_EXPECT_ERROR(tether::check_posix_ipc_name("", "POSIX queue"), std::errc::invalid_argument);
  for (const std::string& bad :
       std::vector<std::string>{"/", "noslash", "/a/b", "//", "/.", "/..", std::string("/a\0b", 4),
                                "/" + std::string(NAME_MAX, 'n')}) {
    auto r = tether::check_posix_ipc_name(bad, "POSIX queue");
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error(), std::errc::invalid_argument);
    EXPECT_NE(r.error().message().find("POSIX queue name"), std::string::npos)
        << r.error().message();
  }
  TT_ASSERT_OK(tether::check_posix_ipc_name("/jobs", "POSIX queue"));
  TT_ASSERT_OK(tether::check_posix_ipc_name("/" + std::string(NAME_MAX - 1, 'n'), "x"));
  TT_ASSERT_OK(tether::check_posix_ipc_name("/...", "x"));
}

TEST_F(SysvMq, ReleaseKeepsTheQueueAndMovesTransferIt) {
  int id = -1;
  {
    auto q = must(SysvQueue::create(tether::SysvKey::private_key()));
    id = q.id();
    q.release();
    EXPECT_FALSE(q.owns());
  }
  TT_ASSERT_OK(SysvQueue::from_id(id).send(1, "kept"));  // still there
  TT_ASSERT_OK(SysvQueue::from_id(id).remove());
  auto first = must(SysvQueue::create(tether::SysvKey::private_key()));
  id = first.id();
  SysvQueue second = std::move(first);
  EXPECT_FALSE(first.owns());  // NOLINT(bugprone-use-after-move): the point of the test
  EXPECT_EQ(first.id(), -1);   // NOLINT(bugprone-use-after-move)
  { SysvQueue gone = std::move(first); }
  SysvQueue third;
  third = std::move(second);
  EXPECT_TRUE(third.owns());
  TT_ASSERT_OK(third.send(1, "moved"));
  { SysvQueue end = std::move(third); }  // removed by its last owner
  TT_EXPECT_ERROR(SysvQueue::from_id(id).send(1, "gone"), std::errc::invalid_argument);
}

// An id whose queue is not the one recorded (another key) is left alone.
// (The kernel reuses an id only once its slot's sequence wraps; recording
// the wrong key shows the same check.)
TEST_F(SysvMq, RemovalLeavesAnIdThatNamesAnotherQueueAlone) {
  auto mine = must(SysvQueue::create(tether::SysvKey::private_key()));
  auto key = must(tether::SysvKey::from_number(0x7d000000 + (::getpid() & 0xffffff)));
  {
    auto wrong =
        tether::NamedObject::sysv(tether::NamedObject::Kind::sysv_queue, mine.id(), key, true);
    TT_EXPECT_ERROR(wrong.remove(), std::errc::file_exists);
  }
  TT_ASSERT_OK(mine.send(1, "untouched"));
  EXPECT_EQ(must(mine.recv(1, 5s)).text(), "untouched");
}

TEST_F(SysvMq, KeysAreMadeOnPurpose) {
  using tether::SysvKey;
  EXPECT_TRUE(SysvKey::private_key().is_private());
  EXPECT_EQ(SysvQueue::private_key, SysvKey::private_key());
  EXPECT_EQ(must(SysvKey::from_number(0x1f)).get(), 0x1f);
  EXPECT_EQ(must(SysvKey::from_number(0xffffffffLL)).get(), -1);  // the upper half: negative key_t
  EXPECT_EQ(must(SysvKey::from_number(-1)).get(), -1);
  for (long long bad : {0LL, 1LL << 32, -(1LL << 32), 99999999999LL}) {
    TT_EXPECT_ERROR(SysvKey::from_number(bad), std::errc::invalid_argument);
  }
  auto zero = SysvKey::from_number(0);
  ASSERT_FALSE(zero);
  EXPECT_NE(zero.error().message().find("IPC_PRIVATE"), std::string::npos);
  EXPECT_EQ(must(SysvKey::parse("0x7e001234")).get(), 0x7e001234);
  EXPECT_EQ(must(SysvKey::parse("12")).get(), 12);
  for (std::string bad : {"0", "0x0", "4294967296", "-1", "+5", "12abc", "0x", ""}) {
    TT_EXPECT_ERROR(SysvKey::parse(bad), std::errc::invalid_argument);
  }
  EXPECT_EQ(must(SysvKey::parse("0x7e001234")).describe(), "0x7e001234");
  EXPECT_EQ(SysvKey::private_key().describe(), "IPC_PRIVATE");
  TT_EXPECT_ERROR(SysvKey::from_path("/no/such/path/for/ftok", 1),
                  std::errc::no_such_file_or_directory);
  TT_EXPECT_ERROR(SysvKey::from_path("/", 256), std::errc::invalid_argument);
  EXPECT_FALSE(must(SysvKey::from_path("/", 1)).is_private());
}
