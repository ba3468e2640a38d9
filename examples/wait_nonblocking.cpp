// waitpid(pid, WNOHANG)-style polling: check on the child while doing other work.
#include <chrono>
#include <cstdio>
#include <thread>

#include <tether/process.hpp>

int main() {
  using namespace std::chrono_literals;
  auto child = tether::Command("sleep").arg("0.3").spawn().value();
  int chores = 0;
  for (;;) {
    auto done = child.try_wait().value();
    if (done) {
      std::printf("child %s after %s chores\n", done->describe().c_str(),
                  chores > 1 ? "several" : "few");
      break;
    }
    ++chores;  // other work
    std::this_thread::sleep_for(50ms);
  }
}
