// The shared-memory Dict: every call, growth in place seen by another
// process, a fixed capacity, snapshots, readers racing a writer, a writer
// killed -9 at random instants, and hostile segments.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <thread>

#include "support.hpp"
#include "tether/queue.hpp"

using namespace std::chrono_literals;
using tether::Dict;
using tether_test::must;

namespace {

class DictTest : public tether_test::Clean {};

tether::Fd dup_fd(int fd) {
  return tether::Fd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

TEST_F(DictTest, EveryCallDoesWhatItSays) {
  auto d = must(Dict::anonymous({.capacity = 16}));
  EXPECT_TRUE(d.empty());
  TT_ASSERT_OK(d.set("mode", "fast"));
  TT_ASSERT_OK(d.set_value("workers", 4));
  EXPECT_EQ(must(d.get("mode")), "fast");
  EXPECT_EQ(must(d.get_value<int>("workers")), 4);
  EXPECT_EQ(d.size(), 2u);
  TT_EXPECT_ERROR(d.get("nothing"), tether::errc::no_such_key);
  TT_EXPECT_ERROR(d.get_value<long>("workers"), std::errc::bad_message);
  EXPECT_TRUE(must(d.contains("mode")));
  EXPECT_FALSE(must(d.contains("nothing")));
  // Replace, set-if-absent, erase, pop.
  TT_ASSERT_OK(d.set("mode", "a much longer value than before, in another size class"));
  EXPECT_EQ(must(d.get("mode")), "a much longer value than before, in another size class");
  EXPECT_FALSE(must(d.set_if_absent("mode", "x")));
  EXPECT_TRUE(must(d.set_if_absent("new", "x")));
  EXPECT_EQ(must(d.get("new")), "x");
  EXPECT_TRUE(must(d.erase("new")));
  EXPECT_FALSE(must(d.erase("new")));
  EXPECT_EQ(must(d.pop("workers")).size(), sizeof(int));
  TT_EXPECT_ERROR(d.pop("workers"), tether::errc::no_such_key);
  EXPECT_EQ(d.size(), 1u);
  // An empty key and an empty value are allowed; a huge entry is not.
  TT_ASSERT_OK(d.set("", ""));
  EXPECT_EQ(must(d.get("")), "");
  std::string big(2u << 20, 'b');
  TT_EXPECT_ERROR(d.set("big", big), std::errc::message_size);
  std::string fits((1u << 20) - 3, 'f');
  TT_ASSERT_OK(d.set("fit", fits));
  EXPECT_EQ(must(d.get("fit")), fits);
  // update in place under the lock.
  TT_ASSERT_OK(d.update_value<int>(
      "hits", [](int& n) { n += 5; }, 10));
  TT_ASSERT_OK(d.update_value<int>("hits", [](int& n) { n += 1; }));
  EXPECT_EQ(must(d.get_value<int>("hits")), 16);
  TT_EXPECT_ERROR(d.update_value<long>("hits", [](long& n) { ++n; }), std::errc::bad_message);
  TT_ASSERT_OK(d.update(
      "mode", [](std::string& v, bool present) { v = present ? v.substr(0, 6) : "absent"; }));
  EXPECT_EQ(must(d.get("mode")), "a much");
  TT_ASSERT_OK(d.clear());
  EXPECT_EQ(d.size(), 0u);
  TT_EXPECT_ERROR(d.get("mode"), tether::errc::no_such_key);
  TT_ASSERT_OK(d.set("after", "clear"));
  EXPECT_EQ(must(d.get("after")), "clear");
  Dict none;
  TT_EXPECT_ERROR(none.get("x"), std::errc::invalid_argument);
}

TEST_F(DictTest, GrowsInPlaceAndAnotherProcessSeesIt) {
  auto name = tether_test::unique_posix_name("d");
  auto d = must(Dict::create(name, {.capacity = 8, .typical_entry = 16}));
  const auto first = d.stats();
  // A process that opened it while small reads it after it grew.
  auto parent_done = must(tether::Pipe::create());
  auto child = must(tether::fork([&] {
    auto mine = Dict::open(name);
    if (!mine) return 2;
    char c;
    if (::read(parent_done.reader.fd(), &c, 1) != 1) return 3;
    for (int i = 0; i < 20000; ++i) {
      auto v = mine->get("key-" + std::to_string(i));
      if (i % 3 == 0) {
        if (v || v.error() != tether::errc::no_such_key) return 4;
      } else if (!v || *v != std::string(static_cast<std::size_t>(i % 50), 'v')) {
        return 5;
      }
    }
    return mine->size() == 20000 - 6667 ? 0 : 6;
  }));
  for (int i = 0; i < 20000; ++i)
    TT_ASSERT_OK(
        d.set("key-" + std::to_string(i), std::string(static_cast<std::size_t>(i % 50), 'v')));
  for (int i = 0; i < 20000; i += 3) EXPECT_TRUE(must(d.erase("key-" + std::to_string(i))));
  const auto grown = d.stats();
  EXPECT_GT(grown.table_slots, first.table_slots);
  EXPECT_GT(grown.bytes, first.bytes);
  EXPECT_EQ(grown.size, 20000u - 6667u);
  ASSERT_EQ(::write(parent_done.writer.fd(), "x", 1), 1);
  EXPECT_EQ(must(child.wait(60s)).code(), 0);
  EXPECT_EQ(must(d.keys()).size(), 20000u - 6667u);
}

TEST_F(DictTest, AFixedCapacitySaysWhenFull) {
  auto d = must(Dict::anonymous({.capacity = 4, .typical_entry = 32, .fixed = true}));
  for (int i = 0; i < 4; ++i) TT_ASSERT_OK(d.set("k" + std::to_string(i), "v"));
  auto full = d.set("k4", "v");
  ASSERT_FALSE(full.has_value());
  EXPECT_TRUE(full.error() == std::errc::no_space_on_device);
  EXPECT_NE(full.error().message().find("full"), std::string::npos) << full.error().message();
  TT_EXPECT_ERROR(d.get("k4"), tether::errc::no_such_key);  // nothing half made
  TT_ASSERT_OK(d.set("k0", "replaced"));                    // a key held: fine
  TT_ASSERT_OK(d.set("k1", std::string(30, 'r')));          // and again, full
  TT_EXPECT_ERROR(d.update_value<long>("k2", [](long& n) { ++n; }), std::errc::bad_message);
  EXPECT_TRUE(must(d.erase("k1")));
  TT_ASSERT_OK(d.set("k4", "v"));
  EXPECT_EQ(d.size(), 4u);
  // Many set/erase cycles reuse the space freed: no growth, no error.
  for (int i = 0; i < 10000; ++i) {
    TT_ASSERT_OK(d.set("k4", std::string(static_cast<std::size_t>(i % 20), 'x')));
    ASSERT_TRUE(must(d.erase("k4")));
    TT_ASSERT_OK(d.set("k4", "v"));
  }
  EXPECT_EQ(d.size(), 4u);
}

TEST_F(DictTest, ItemsIsEveryEntry) {
  auto d = must(Dict::anonymous());
  std::map<std::string, std::string> want;
  for (int i = 0; i < 500; ++i) {
    want["k" + std::to_string(i)] = std::to_string(i * i);
    TT_ASSERT_OK(d.set("k" + std::to_string(i), std::to_string(i * i)));
  }
  auto items = must(d.items());
  std::map<std::string, std::string> got(items.begin(), items.end());
  EXPECT_EQ(got, want);
}

// The reference material's example: two processes update shared data
// under the lock, and the result shows both updates.
TEST_F(DictTest, TwoProcessesUpdateUnderTheLock) {
  auto d = must(Dict::anonymous());
  auto child = must(tether::fork([&] {
    for (int i = 0; i < 2000; ++i)
      if (!d.update_value<int>("count", [](int& n) { ++n; })) return 2;
    return d.set("child", "was here") ? 0 : 3;
  }));
  for (int i = 0; i < 2000; ++i) TT_ASSERT_OK(d.update_value<int>("count", [](int& n) { ++n; }));
  EXPECT_EQ(must(child.wait(60s)).code(), 0);
  EXPECT_EQ(must(d.get_value<int>("count")), 4000);
  EXPECT_EQ(must(d.get("child")), "was here");
}

// A value is "<n>:" then n copies of one letter: a torn read shows.
std::string patterned(std::size_t n, char c) {
  return std::to_string(n) + ":" + std::string(n, c);
}
bool well_formed(const std::string& v) {
  auto colon = v.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  unsigned n = static_cast<unsigned>(std::stoul(v.substr(0, colon)));
  if (v.size() != colon + 1 + n) return false;
  return n == 0 || std::all_of(v.begin() + static_cast<long>(colon) + 1, v.end(),
                               [&](char ch) { return ch == v[colon + 1]; });
}

TEST_F(DictTest, ReadersRacingAWriterNeverSeeATornValueOrMissAKey) {
  auto d = must(Dict::anonymous({.capacity = 64}));
  for (int i = 0; i < 50; ++i)
    TT_ASSERT_OK(d.set("stable-" + std::to_string(i), patterned(8, 's')));
  TT_ASSERT_OK(d.set("hot", patterned(10, 'a')));
  auto writer = must(tether::fork([&] {
    std::mt19937 rng(7);
    for (unsigned r = 0; r < 60000; ++r) {
      if (!d.set("hot", patterned(rng() % 600, static_cast<char>('a' + r % 26)))) return 2;
      // Churn around the stable keys: inserts, erases (which move words),
      // growth, and rewrites of the stable keys with an equal value.
      const std::string t = "temp-" + std::to_string(rng() % 300);
      if (r % 2 == 0) {
        if (!d.set(t, patterned(rng() % 100, 't'))) return 3;
      } else if (!d.erase(t)) {
        return 4;
      }
      if (r % 7 == 0 && !d.set("stable-" + std::to_string(rng() % 50), patterned(8, 's'))) return 5;
    }
    return 0;
  }));
  std::string v;
  long reads = 0;
  while (!writer.try_wait().value_or(std::nullopt)) {
    TT_ASSERT_OK(d.get_into("hot", v));
    ASSERT_TRUE(well_formed(v)) << v.substr(0, 40);
    const std::string k = "stable-" + std::to_string(reads % 50);
    auto s = d.get(k);
    ASSERT_TRUE(s.has_value()) << k << ": " << s.error().message();
    ASSERT_EQ(*s, patterned(8, 's'));
    ++reads;
  }
  EXPECT_GT(reads, 0);
  auto items = must(d.items());
  EXPECT_EQ(items.size(), d.size());
}

TEST_F(DictTest, AWriterKilledAtAnyInstantLosesNoKeyAndTearsNoValue) {
  auto d = must(Dict::anonymous({.capacity = 32}));
  for (int i = 0; i < 100; ++i) TT_ASSERT_OK(d.set("s" + std::to_string(i), patterned(3, 'a')));
  std::mt19937 rng(11);
  for (int trial = 0; trial < 25; ++trial) {
    auto child = must(tether::fork([&] {
      std::mt19937 mine(static_cast<unsigned>(trial));
      for (unsigned r = 0;; ++r) {
        (void)d.set("s" + std::to_string(mine() % 100),
                    patterned(mine() % 300, static_cast<char>('a' + r % 26)));
        const std::string t = "t" + std::to_string(mine() % 500);
        if (r % 3 == 0)
          (void)d.erase(t);
        else
          (void)d.set(t, patterned(mine() % 50, 't'));
      }
      return 0;
    }));
    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 5000));
    EXPECT_EQ(must(child.kill()).signal(), SIGKILL);
    // Every stable key is there, whole; the count matches the entries.
    for (int i = 0; i < 100; ++i) {
      auto v = d.get("s" + std::to_string(i));
      ASSERT_TRUE(v.has_value()) << "trial " << trial << " s" << i << ": " << v.error().message();
      ASSERT_TRUE(well_formed(*v)) << v->substr(0, 40);
    }
    auto items = must(d.items());
    ASSERT_EQ(items.size(), d.size()) << "trial " << trial;
    for (auto& [k, v] : items) ASSERT_TRUE(well_formed(v)) << k;
  }
  // And it goes on working: the space the dead left is reused.
  for (int i = 0; i < 1000; ++i)
    TT_ASSERT_OK(d.set("after-" + std::to_string(i), patterned(5, 'z')));
  EXPECT_EQ(must(d.get("after-999")), patterned(5, 'z'));
  EXPECT_GE(d.stats().repairs, 1u);  // at least one death found the lock held
}

TEST_F(DictTest, HostileSegmentsAreErrorsNotCrashes) {
  auto d = must(Dict::anonymous({.capacity = 16}));
  TT_ASSERT_OK(d.set("a", "1"));
  // The whole segment: the header's page and the arena after it (the table
  // is its first block, at 4096).
  struct stat st {};
  ASSERT_EQ(::fstat(d.memory_fd(), &st), 0);
  ASSERT_GT(st.st_size, 4096 + 64 + (8 * 32));
  auto map = must(tether::Mapping::map(d.memory_fd(), 0, static_cast<std::size_t>(st.st_size),
                                       tether::Access::read_write, "dict"));
  // DictHeader: prefix 32, seed/max_entry/capacity/fixed 32, the lock at 64
  // (56 bytes), then table at 120, bytes at 128.
  std::uint64_t table = 0, bytes = 0;
  std::memcpy(&table, map.data() + 120, 8);
  std::memcpy(&bytes, map.data() + 128, 8);
  ASSERT_EQ(table & 63, 5u);  // 32 slots for 16 entries
  std::uint64_t huge = bytes * 1000;
  std::memcpy(map.data() + 128, &huge, 8);
  TT_EXPECT_ERROR(Dict::adopt(dup_fd(d.memory_fd())), tether::errc::bad_record);
  std::memcpy(map.data() + 128, &bytes, 8);
  // A table that points past the end: every call says so.
  std::uint64_t far = (std::uint64_t{1} << 40) | 5;
  std::memcpy(map.data() + 120, &far, 8);
  TT_EXPECT_ERROR(d.get("a"), tether::errc::bad_record);
  TT_EXPECT_ERROR(d.set("b", "2"), tether::errc::bad_record);
  TT_EXPECT_ERROR(d.items(), tether::errc::bad_record);
  std::memcpy(map.data() + 120, &table, 8);
  EXPECT_EQ(must(d.get("a")), "1");
  // A size past the file's end is not believed (no SIGBUS).
  std::memcpy(map.data() + 128, &huge, 8);
  EXPECT_EQ(must(d.get("a")), "1");
  std::memcpy(map.data() + 128, &bytes, 8);
  // The next block (bump, at 136) and a free list (at 160) pointing
  // anywhere: bad_record, never a write outside the segment.
  std::uint64_t bump = 0;
  std::memcpy(&bump, map.data() + 136, 8);
  for (std::uint64_t bad : {~std::uint64_t{0} - 63, ~std::uint64_t{0} - 7, std::uint64_t{8}}) {
    std::memcpy(map.data() + 136, &bad, 8);
    TT_EXPECT_ERROR(d.set("new-key", "v"), tether::errc::bad_record);
  }
  std::memcpy(map.data() + 136, &bump, 8);
  std::uint64_t head = ~std::uint64_t{0} - 31;
  std::memcpy(map.data() + 160, &head, 8);  // class 64 B
  TT_EXPECT_ERROR(d.set("b", "2"), tether::errc::bad_record);
  std::uint64_t zero = 0;
  std::memcpy(map.data() + 160, &zero, 8);
  // A garbage word beside a real one: erase and clear refuse or drop it.
  TT_ASSERT_OK(d.set("b", "2"));
  ASSERT_LE((table & ~std::uint64_t{63}) + 64 + std::uint64_t{256}, map.size());
  auto* slots = map.data() + (table & ~std::uint64_t{63}) + 64;
  std::uint64_t garbage = (std::uint64_t{1} << 47) | 0x123;
  bool planted = false;
  for (std::size_t i = 0; i < 32; ++i) {
    std::uint64_t w = 0;
    std::memcpy(&w, slots + 8 * i, 8);
    if (w == 0) {
      std::memcpy(slots + 8 * i, &garbage, 8);
      planted = true;
      break;
    }
  }
  ASSERT_TRUE(planted) << "a table of 32 slots holding 2 keys has an empty one";
  (void)d.erase("a");       // bad_record if the garbage is in its run; never a crash
  TT_ASSERT_OK(d.clear());  // the garbage is dropped, not freed
  TT_ASSERT_OK(d.set("c", "3"));
  EXPECT_EQ(must(d.get("c")), "3");
  // Not a dict at all.
  auto qname = tether_test::unique_posix_name("q");
  auto q = must(tether::Queue::create(qname, {.max_message = 64, .capacity_bytes = 4096}));
  TT_EXPECT_ERROR(Dict::open(qname), std::errc::invalid_argument);
  TT_EXPECT_ERROR(Dict::open(tether_test::unique_posix_name("none")),
                  std::errc::no_such_file_or_directory);
}

}  // namespace
