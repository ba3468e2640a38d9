// Value and Array in shared memory: shared with fork children and by name,
// locked and lock-free updates from several processes, type checks on
// open, hostile headers, and a lock holder killed -9.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "support.hpp"
#include "tether/queue.hpp"

using namespace std::chrono_literals;
using tether::Array;
using tether::Value;
using tether_test::must;

namespace {

class ValueTest : public tether_test::Clean {};

tether::Fd dup_fd(int fd) {
  return tether::Fd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

TEST_F(ValueTest, ForkChildrenAddWithoutTheLock) {
  auto v = must(Value<long>::anonymous(5));
  std::vector<tether::Process> children;
  children.reserve(4);
  for (int c = 0; c < 4; ++c) {
    children.push_back(must(tether::fork([&] {
      for (int i = 0; i < 10000; ++i) v.fetch_add(1);
      return 0;
    })));
  }
  for (auto& c : children) EXPECT_EQ(must(c.wait(60s)).code(), 0);
  EXPECT_EQ(must(v.load()), 40005);
}

// The reference material's example: two processes update shared data
// under its lock, and the result shows both updates.
TEST_F(ValueTest, TwoProcessesUpdateUnderTheLockByName) {
  auto name = tether_test::unique_posix_name("v");
  auto v = must(Value<int>::create(name, 0));
  auto child = must(tether::fork([&] {
    auto mine = Value<int>::open(name);
    if (!mine) return 2;
    for (int i = 0; i < 2000; ++i) {
      auto g = mine->lock();
      if (!g) return 3;
      *mine->get() += 1;
    }
    return 0;
  }));
  for (int i = 0; i < 2000; ++i) {
    auto g = must(v.lock());
    int now = *v.get();
    *v.get() = now + 1;
  }
  EXPECT_EQ(must(child.wait(60s)).code(), 0);
  EXPECT_EQ(must(v.load()), 4000);
  TT_ASSERT_OK(v.store(-7));
  EXPECT_EQ(must(v.load()), -7);
}

struct Big {
  std::array<std::uint64_t, 512> word;
};

TEST_F(ValueTest, AHolderKilledMidUpdateIsReportedAndAStoreStaysWhole) {
  Big one{};
  one.word.fill(1);
  auto v = must(Value<Big>::anonymous(one));
  // Killed holding the lock, half way through writing in place.
  auto child = must(tether::fork([&] {
    auto g = v.lock();
    if (!g) return 2;
    for (std::size_t i = 0; i < 256; ++i) v.get()->word[i] = 2;
    ::raise(SIGKILL);
    return 1;
  }));
  EXPECT_EQ(must(child.wait(60s)).signal(), SIGKILL);
  {
    auto g = must(v.lock(10s));
    EXPECT_TRUE(g.owner_died());
    EXPECT_EQ(v.get()->word[0], 2u);  // what it wrote in place stays: yours to repair
    EXPECT_EQ(v.get()->word[511], 1u);
    v.get()->word.fill(1);
    TT_ASSERT_OK(g.mark_consistent());
  }
  // Killed holding the lock after a whole store: load() repairs, counts,
  // and sees the value whole.
  Big three{};
  three.word.fill(3);
  auto again = must(tether::fork([&] {
    if (!v.store(three)) return 2;
    auto g = v.lock();
    ::raise(SIGKILL);
    return 1;
  }));
  EXPECT_EQ(must(again.wait(60s)).signal(), SIGKILL);
  Big got = must(v.load(10s));
  EXPECT_EQ(got.word[0], 3u);
  EXPECT_EQ(got.word[511], 3u);
  EXPECT_EQ(v.stats().owner_deaths, 1u);
  TT_ASSERT_OK(v.store(one));
  EXPECT_EQ(must(v.load()).word[100], 1u);
}

TEST_F(ValueTest, OpenChecksTheType) {
  auto name = tether_test::unique_posix_name("v");
  auto v = must(Value<std::int64_t>::create(name, 9));
  TT_EXPECT_ERROR(Value<double>::open(name), std::errc::invalid_argument);
  TT_EXPECT_ERROR(Value<std::uint64_t>::open(name), std::errc::invalid_argument);
  TT_EXPECT_ERROR(Value<int>::open(name), std::errc::invalid_argument);
  TT_EXPECT_ERROR(Array<std::int64_t>::open(name), std::errc::invalid_argument);
  struct Eight {
    std::int64_t x;
  };
  // A plain struct of the same size and alignment is bytes: accepted.
  auto as_bytes = must(Value<Eight>::open(name));
  EXPECT_EQ(must(as_bytes.load()).x, 9);
  TT_EXPECT_ERROR(Value<int>::open(tether_test::unique_posix_name("none")),
                  std::errc::no_such_file_or_directory);
  TT_EXPECT_ERROR(Value<int>::create(name, 1), std::errc::file_exists);
  // Not a shared value at all: a queue.
  auto qname = tether_test::unique_posix_name("q");
  auto q = must(tether::Queue::create(qname, {.max_message = 64, .capacity_bytes = 4096}));
  TT_EXPECT_ERROR(Value<int>::open(qname), std::errc::invalid_argument);
}

TEST_F(ValueTest, AHostileHeaderIsRefused) {
  auto a = must(Array<int>::anonymous(100, 1));
  auto map = must(tether::Mapping::map(a.memory_fd(), 0, a.memory_bytes(),
                                       tether::Access::read_write, "array"));
  // BlockHeader: prefix 32 bytes, then sizes (16), count at 48.
  std::uint64_t count = 0;
  std::memcpy(&count, map.data() + 48, 8);
  EXPECT_EQ(count, 100u);
  for (std::uint64_t bad : {std::uint64_t{1} << 20, std::uint64_t{1} << 62}) {
    std::memcpy(map.data() + 48, &bad, 8);
    TT_EXPECT_ERROR(Array<int>::adopt(dup_fd(a.memory_fd())), tether::errc::bad_record);
  }
  std::memcpy(map.data() + 48, &count, 8);
  auto b = must(Array<int>::adopt(dup_fd(a.memory_fd())));
  EXPECT_EQ(b.size(), 100u);
  TT_ASSERT_OK(b.store(99, 5));
  EXPECT_EQ(must(a.load(99)), 5);
}

TEST_F(ValueTest, ArrayElementsSnapshotsAndBounds) {
  auto a = must(Array<std::uint32_t>::anonymous(64, 7));
  EXPECT_EQ(a.size(), 64u);
  EXPECT_EQ(must(a.load(63)), 7u);
  TT_EXPECT_ERROR(a.load(64), std::errc::invalid_argument);
  TT_EXPECT_ERROR(a.store(1000, 1), std::errc::invalid_argument);
  auto child = must(tether::fork([&] {
    for (std::size_t i = 0; i < a.size(); ++i) a.fetch_add(i, static_cast<std::uint32_t>(i));
    return a.store(0, 100) ? 0 : 2;
  }));
  EXPECT_EQ(must(child.wait(60s)).code(), 0);
  auto all = must(a.snapshot());
  ASSERT_EQ(all.size(), 64u);
  EXPECT_EQ(all[0], 100u);
  EXPECT_EQ(all[10], 17u);
  std::vector<std::uint32_t> zeros(64, 0);
  TT_ASSERT_OK(a.assign(zeros));
  EXPECT_EQ(must(a.load(10)), 0u);
  std::vector<std::uint32_t> short_one(3, 0);
  TT_EXPECT_ERROR(a.assign(short_one), std::errc::invalid_argument);
  // An empty array is allowed, as in Python.
  auto none = must(Array<double>::anonymous(0));
  EXPECT_EQ(none.size(), 0u);
  EXPECT_EQ(must(none.snapshot()).size(), 0u);
}

}  // namespace
