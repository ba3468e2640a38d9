// The protocol between `tether open` and its supervisors
// (tether/supervise/launch.hpp), field by field where a field was added
// after the first version: what decodes, what round-trips, and what is
// refused with the field named. (fuzz/launch.cpp checks round trips of
// whatever decodes.)
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "tether/supervise/launch.hpp"

namespace launch = tether::launch;
using json = nlohmann::json;

namespace {

tether::SupervisorSpec some_spec() {
  tether::SupervisorSpec s;
  s.id = "0a1b2c3d";
  s.name = "web";
  s.command = {"sleep", "1000"};
  s.cwd = "/";
  return s;
}

// The spec's JSON with one field changed (or removed when `value` is null).
std::string with(const std::string& key, const json& value) {
  json j = json::parse(launch::encode_spec(some_spec()));
  if (value.is_null()) {
    j.erase(key);
  } else {
    j[key] = value;
  }
  return j.dump();
}

}  // namespace

TEST(LaunchSpec, StartDownRoundTripsAndIsOptional) {
  auto s = some_spec();
  s.start_down = true;
  auto back = launch::decode_spec(launch::encode_spec(s));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_TRUE(back->start_down);
  // A spec written before the field existed starts the worker.
  auto old = launch::decode_spec(with("start_down", nullptr));
  ASSERT_TRUE(old) << old.error().message();
  EXPECT_FALSE(old->start_down);
  auto bad = launch::decode_spec(with("start_down", "yes"));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("start_down"), std::string::npos) << bad.error().message();
}

TEST(LaunchSpec, MemoryFieldsOutOfRangeAreRefused) {
  auto s = some_spec();
  s.memory_limit = 64u << 20;
  s.memory_check = std::chrono::milliseconds(50);
  auto back = launch::decode_spec(launch::encode_spec(s));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->memory_limit, 64u << 20);
  EXPECT_EQ(back->memory_check.count(), 50);
  for (const auto& [key, value] : {std::pair<std::string, json>{"memory_limit_bytes", -1},
                                   {"memory_limit_bytes", (1ull << 50) + 1},
                                   {"memory_limit_bytes", "64M"},
                                   {"memory_check_ms", 9},
                                   {"memory_check_ms", 86400001}}) {
    auto r = launch::decode_spec(with(key, value));
    ASSERT_FALSE(r) << key << " = " << value.dump();
    EXPECT_NE(r.error().message().find("memory limit"), std::string::npos) << r.error().message();
  }
}

TEST(LaunchReport, OkWithNoWorkerIsAStartDownsAnswer) {
  auto ok = launch::decode_report("0a1b2c3d ok 0 4242");
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->kind, launch::Report::Kind::ok);
  EXPECT_EQ(ok->worker, 0);
  EXPECT_EQ(ok->supervisor, 4242);
  EXPECT_EQ(launch::encode_report(*ok), "0a1b2c3d ok 0 4242\n");
  // A supervisor pid is never 0, a worker pid never negative or padded.
  EXPECT_FALSE(launch::decode_report("0a1b2c3d ok 0 0"));
  EXPECT_FALSE(launch::decode_report("0a1b2c3d ok -1 4242"));
  EXPECT_FALSE(launch::decode_report("0a1b2c3d ok 00 4242"));
}
