// After fork, parent and child have separate copies of memory.
#include <unistd.h>

#include <cstdio>

#include <tether/process.hpp>

int counter = 100;

int main() {
  auto child = tether::fork([] {
    counter += 1;
    std::printf("child: counter = %d\n", counter);
    return 0;
  });
  if (!child) return 1;
  child->wait();
  counter -= 1;
  std::printf("parent: counter = %d\n", counter);  // 99: the child's +1 never reaches us
}
