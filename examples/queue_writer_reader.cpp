// The reference material's Queue example: a writer puts ten values with
// random pauses; the reader looks at empty() and, when there is nothing
// yet, waits; a value of -1 says the writer is done.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include <tether/tether.hpp>

int main() {
  using namespace std::chrono_literals;
  auto q = tether::Queue::anonymous({.max_message = sizeof(int), .capacity_messages = 4});
  if (!q) {
    std::fprintf(stderr, "%s\n", q.error().message().c_str());
    return 1;
  }
  auto reader = tether::fork([&] {
    int got = 0, waits = 0;
    for (;;) {
      if (q->empty()) {
        ++waits;  // nothing yet: the reader could do other work here
        std::this_thread::sleep_for(1ms);
        continue;
      }
      auto v = q->get_value<int>(5s);
      if (!v) return 2;
      if (*v == -1) break;
      std::printf("reader got %d\n", *v);
      ++got;
    }
    std::printf("reader: %d values, found the queue empty %s\n", got,
                waits > 0 ? "and waited" : "never");
    return got == 10 ? 0 : 3;
  });
  if (!reader) return 1;
  std::mt19937 rng(static_cast<unsigned>(::getpid()));
  for (int i = 0; i < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
    if (!q->put_value(i * i)) return 1;
  }
  if (!q->put_value(-1)) return 1;
  auto status = reader->wait();
  if (!status) return 1;
  std::printf("reader %s\n", status->describe().c_str());
  return status->code().value_or(1);
}
