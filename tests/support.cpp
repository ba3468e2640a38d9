#include "support.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

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

std::string unique_posix_name(const std::string& stem) {
  return "/" + unique_name(stem);
}

namespace {

constexpr long long kKeyBase = 0x40000000;

bool key_is_ours(long long key) {
  return (key & ~0x3fffffffLL) == kKeyBase && ((key & 0x3fffffff) >> 8) == getpid();
}

// The rows of /proc/sysvipc/<table> (after its header), split into fields.
std::vector<std::vector<long long>> sysv_rows(const char* table) {
  std::vector<std::vector<long long>> rows;
  std::ifstream in(std::string("/proc/sysvipc/") + table);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<long long> row;
    long long v = 0;
    while (fields >> v) row.push_back(v);
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace

tether::SysvKey unique_key() {
  static std::atomic<int> counter{0};
  long long key = kKeyBase | (static_cast<long long>(getpid()) << 8) | (counter++ & 0xff);
  auto k = tether::SysvKey::from_number(key);
  if (!k) throw std::runtime_error(k.error().message());
  return *k;
}

std::vector<std::string> named_leftovers() {
  std::vector<std::string> out;
  std::string marker = "-" + std::to_string(getpid()) + "-";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm", ec)) {
    std::string name = e.path().filename().string();
    if (name.find(marker) != std::string::npos) out.push_back("/dev/shm/" + name);
  }
  // /proc/sysvipc/shm: key shmid perms size cpid lpid ...; sem and msg:
  // key id perms ...
  for (const auto& row : sysv_rows("shm")) {
    if (row.size() > 4 && (key_is_ours(row[0]) || row[4] == getpid()))
      out.push_back("System V shared memory " + std::to_string(row[1]));
  }
  for (const auto* table : {"sem", "msg"}) {
    for (const auto& row : sysv_rows(table)) {
      if (row.size() > 1 && key_is_ours(row[0]))
        out.push_back(std::string("System V ") + table + " " + std::to_string(row[1]));
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

int run_in_child(const std::function<int()>& body, std::chrono::milliseconds timeout) {
  auto child = tether::fork(body);
  if (!child) {
    ADD_FAILURE() << child.error().message();
    return -1;
  }
  auto status = child->wait(timeout);
  if (!status) {
    ADD_FAILURE() << "child: " << status.error().message();
    (void)child->kill();
    return -1;
  }
  if (!status->code()) {
    ADD_FAILURE() << "child: " << status->describe();
    return -1;
  }
  return *status->code();
}

void Clean::SetUp() {
  auto n = tether::count_open_fds();
  ASSERT_TRUE(n.has_value());
  fds_before_ = *n;
  named_before_ = named_leftovers();
}

void Clean::TearDown() {
  auto n = tether::count_open_fds();
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, fds_before_) << "descriptors leaked by this test";
  EXPECT_FALSE(has_children()) << "a child process (running or zombie) was left behind";
  auto named = named_leftovers();
  std::vector<std::string> left;
  std::set_difference(named.begin(), named.end(), named_before_.begin(), named_before_.end(),
                      std::back_inserter(left));
  for (const auto& l : left) ADD_FAILURE() << "left behind: " << l;
}

}  // namespace tether_test
