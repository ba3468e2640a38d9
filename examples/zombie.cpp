// A child that has exited but is not yet reaped is a zombie ("Z" in ps);
// waiting reaps it and the zombie disappears.
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <tether/process.hpp>

// The state letter of /proc/PID/stat, or '-' once the pid is gone.
char state_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), {});
  auto close = text.rfind(')');
  return close == std::string::npos ? '-' : text[close + 2];
}

int main() {
  auto child = tether::Command("true").spawn().value();
  // The pidfd turns readable when the child has exited; we do not reap yet.
  pollfd p{child.pidfd(), POLLIN, 0};
  poll(&p, 1, -1);
  std::printf("child %d exited but not reaped: state %c (zombie)\n", child.pid(),
              state_of(child.pid()));
  auto status = child.wait();
  std::printf("after wait: %s; state %c (gone)\n", status->describe().c_str(),
              state_of(child.pid()));
}
