// fork() returns twice: 0-like in the child, the child's handle in the parent.
#include <unistd.h>

#include <cstdio>

#include <tether/process.hpp>

int main() {
  std::printf("before fork: pid %d\n", getpid());
  auto forked = tether::fork_here();
  if (!forked) {
    std::fprintf(stderr, "%s\n", forked.error().message().c_str());
    return 1;
  }
  if (forked->in_child()) {
    std::printf("child: fork returned to me, pid %d, parent %d\n", getpid(), getppid());
    std::fflush(stdout);
    _exit(0);  // never return into the parent's code
  }
  auto status = forked->process.wait();
  std::printf("parent: fork returned child pid %d, which %s\n", forked->process.pid(),
              status->describe().c_str());
}
