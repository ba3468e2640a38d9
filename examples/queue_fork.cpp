// A queue between a parent and a fork child: the anonymous queue is made
// before fork, so the child has it too and joins it by itself on its
// first call. Whole messages of any size, then close(): the child drains
// what is left and sees the end of the stream.
#include <cstdio>
#include <string>

#include <tether/tether.hpp>

int main() {
  using namespace std::chrono_literals;
  auto q = tether::Queue::anonymous({.max_message = 1024});
  if (!q) {
    std::fprintf(stderr, "%s\n", q.error().message().c_str());
    return 1;
  }
  auto child = tether::fork([&] {
    std::size_t bytes = 0;
    int n = 0;
    for (;;) {
      auto m = q->get_string(5s);
      if (!m) {
        if (m.error() != tether::errc::end_of_stream) return 2;
        break;
      }
      bytes += m->size();
      ++n;
      if (n <= 2) std::printf("child got \"%s\"\n", m->c_str());
    }
    std::printf("child: %d messages, %zu bytes, then the end of the stream\n", n, bytes);
    return 0;
  });
  if (!child) return 1;
  if (!q->put("hello from the parent") || !q->put("a second message")) return 1;
  for (int i = 0; i < 98; ++i)
    if (!q->put(std::string(static_cast<std::size_t>(i) * 10, 'x'))) return 1;
  q->close();
  auto status = child->wait();
  if (!status) return 1;
  std::printf("child %s\n", status->describe().c_str());
  return status->code().value_or(1);
}
