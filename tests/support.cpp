#include "support.hpp"

#include <unistd.h>

#include <atomic>
#include <climits>
#include <filesystem>

namespace tether_test {

std::string self_exe() {
  return std::filesystem::read_symlink("/proc/self/exe").string();
}

tether::Command helper(const std::string& name, const std::vector<std::string>& args) {
  tether::Command c(self_exe());
  c.arg("--helper").arg(name);
  for (const auto& a : args) c.arg(a);
  return c;
}

bool has_children() {
  siginfo_t info{};
  // WNOWAIT: look, do not reap. ECHILD means there is no child at all.
  int r = waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT);
  if (r < 0) return errno != ECHILD;
  // r == 0: children exist (si_pid == 0 if none has ended yet).
  return true;
}

std::string unique_name(const std::string& stem) {
  static std::atomic<int> counter{0};
  return stem + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
}

void Clean::SetUp() {
  auto n = tether::count_open_fds();
  ASSERT_TRUE(n.has_value());
  fds_before_ = *n;
}

void Clean::TearDown() {
  auto n = tether::count_open_fds();
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, fds_before_) << "descriptors leaked by this test";
  EXPECT_FALSE(has_children()) << "a child process (running or zombie) was left behind";
}

}  // namespace tether_test
