// An orphan is adopted: when its parent exits first, the child is re-parented
// to the nearest subreaper (here: us) or to init, and is still reaped.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include <tether/tether.hpp>

int main() {
  using namespace std::chrono_literals;
  tether::set_child_subreaper(true).value();  // we adopt orphans of our descendants
  auto pipe = tether::Pipe::create().value();
  auto middle = tether::fork([&] {
    auto grandchild = tether::fork([&] {
      pid_t before = getppid();
      std::this_thread::sleep_for(200ms);  // by now our parent has exited
      std::printf("orphan %d: parent was %d, now %d (the subreaper)\n", getpid(), before,
                  getppid());
      std::fflush(stdout);
      return 0;
    });
    std::printf("parent %d: exiting, leaving child %d behind\n", getpid(), grandchild->pid());
    std::fflush(stdout);
    grandchild->detach();  // deliberately forget it
    _exit(0);
    return 0;
  });
  std::printf("subreaper %d: middle process %s\n", getpid(), middle->wait()->describe().c_str());
  auto adopted = tether::wait_any_child(10s);
  std::printf("subreaper %d: reaped orphan %d, which %s\n", getpid(), adopted->pid(),
              adopted->describe().c_str());
}
