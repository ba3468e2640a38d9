// Shared test support.
//
// Every test case runs in its own process (ctest runs the binary once per
// case, with a timeout). The fixture `Clean` checks after each case that it
// left nothing behind: no descriptor more than before, and no child process
// at all (running or zombie).
//
// The test binary doubles as its own helper child (as libuv's test runner
// does): `helper("name", args...)` is a Command that re-executes this binary
// with `--helper name args...`; see helpers.cpp for the list.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tether/tether.hpp"

namespace tether_test {

// The path of the running test binary.
std::string self_exe();

// A Command running one of the helpers of helpers.cpp in a new process.
tether::Command helper(const std::string& name, const std::vector<std::string>& args = {});

// Entry point of helper mode; returns the exit code.
int run_helper(int argc, char** argv);

// True if this process has any child, running or ended but not reaped.
bool has_children();

// A name unique to this process and call (pid + counter), for named objects.
std::string unique_name(const std::string& stem);
// "/" + unique_name(stem): a POSIX IPC name (shm, queue, semaphore).
std::string unique_posix_name(const std::string& stem);
// A System V key unique to this process and call: 0x40000000 | pid << 8 |
// counter. Clean finds what a test left behind by these keys.
tether::SysvKey unique_key();

// What this process may have left in the system-wide tables: /dev/shm
// names holding "-<pid>-" (unique_name), System V objects whose key is one
// of unique_key()'s, System V segments this process created. One line each.
std::vector<std::string> named_leftovers();

class Clean : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

 private:
  int fds_before_ = -1;
  std::vector<std::string> named_before_;
};

// A string's bytes, for APIs that take std::span<const std::byte>.
inline std::span<const std::byte> bytes(std::string_view s) {
  return std::as_bytes(std::span(s));
}

// A child process for the body of a test (tether::fork): its code, or -1
// if it could not be started or waited for within `timeout`.
int run_in_child(const std::function<int()>& body,
                 std::chrono::milliseconds timeout = std::chrono::seconds(60));

// ASSERT that a Result holds a value, printing the error message otherwise.
#define TT_ASSERT_OK(expr)                                                                \
  do {                                                                                    \
    const auto& tt_result_ = (expr);                                                      \
    ASSERT_TRUE(tt_result_.has_value()) << #expr << ": " << tt_result_.error().message(); \
  } while (0)

// EXPECT that a Result is an error, and that its code is `code` — checked in
// that order, so an unexpected success fails the test instead of reading the
// error of a value.
#define TT_EXPECT_ERROR(expr, code)                                                   \
  do {                                                                                \
    const auto& tt_result_ = (expr);                                                  \
    if (tt_result_.has_value()) {                                                     \
      ADD_FAILURE() << #expr << ": succeeded, expected " << #code;                    \
    } else {                                                                          \
      EXPECT_TRUE(tt_result_.error() == (code))                                       \
          << #expr << ": " << tt_result_.error().message() << ", expected " << #code; \
    }                                                                                 \
  } while (0)
#define TT_ASSERT_ERROR(expr, code)                                                     \
  do {                                                                                  \
    const auto& tt_result_ = (expr);                                                    \
    ASSERT_FALSE(tt_result_.has_value()) << #expr << ": succeeded, expected " << #code; \
    ASSERT_TRUE(tt_result_.error() == (code))                                           \
        << #expr << ": " << tt_result_.error().message() << ", expected " << #code;     \
  } while (0)

// The value of a Result, or a failed test. It throws rather than aborts, so
// the stack unwinds through the owners of FIFOs, sockets and queues and a
// failing test still leaves nothing behind (gtest reports the exception).
template <class T>
T must(tether::Result<T> r, const char* what = "") {
  if (!r) {
    ADD_FAILURE() << what << ": " << r.error().message();
    throw std::runtime_error(r.error().message());
  }
  return std::move(*r);
}

}  // namespace tether_test
