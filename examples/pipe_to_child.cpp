// A pipe from parent to child: the parent writes, the child reads to end of stream.
#include <unistd.h>

#include <cstdio>
#include <string>

#include <tether/tether.hpp>

int main() {
  auto pipe = tether::Pipe::create().value();
  auto child = tether::fork([&] {
    pipe.writer.close().value();  // or end of stream never comes
    auto text = pipe.reader.read_all().value();
    std::printf("child %d received: %s\n", getpid(), text.c_str());
    return 0;
  });
  pipe.reader.close().value();
  pipe.writer.write_all("Hello from parent " + std::to_string(getpid())).value();
  pipe.writer.close().value();  // end of stream for the child
  std::printf("parent: child %s\n", child->wait()->describe().c_str());
}
