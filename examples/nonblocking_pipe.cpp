// A non-blocking pipe (pipe2(O_NONBLOCK)): the parent keeps working and
// picks up the child's messages whenever they are there.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <tether/tether.hpp>

int main() {
  using namespace std::chrono_literals;
  auto pipe = tether::Pipe::create(/*nonblocking=*/true).value();
  auto child = tether::fork([&] {
    for (int i = 1; i <= 3; ++i) {
      std::this_thread::sleep_for(100ms);
      pipe.writer.write_all("message " + std::to_string(i) + "\n").value();
    }
    return 0;
  });
  pipe.writer.close().value();
  int empty = 0;
  std::string received;
  for (;;) {
    char buf[256];
    auto n = pipe.reader.try_read(std::as_writable_bytes(std::span(buf)));
    if (n && *n == 0) break;  // end of stream: the child is done
    if (n) {
      received.append(buf, *n);
    } else if (n.error() == std::errc::resource_unavailable_try_again) {
      ++empty;  // nothing yet: do something else
    } else {
      std::fprintf(stderr, "%s\n", n.error().message().c_str());
      return 1;
    }
    std::this_thread::sleep_for(10ms);
  }
  std::printf("%sparent did other work while waiting: %s\n", received.c_str(),
              empty > 3 ? "yes" : "no");
  std::printf("child %s\n", child->wait()->describe().c_str());
}
