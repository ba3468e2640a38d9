// A two-way conversation over two pipes: the parent asks, the child answers.
#include <unistd.h>

#include <cstdio>
#include <string>

#include <tether/tether.hpp>

int main() {
  auto duplex = tether::DuplexPipe::create().value();
  auto child = tether::fork([&] {
    // The child inherited copies of the parent's ends too. Close them, or
    // our own copy of the parent's writer keeps the stream open forever and
    // the read below never sees end of stream: the classic fork+pipe hang.
    duplex.first.in.close().value();
    duplex.first.out.close().value();
    auto& me = duplex.second;
    char question[64];
    for (;;) {
      auto n = me.in.read(std::as_writable_bytes(std::span(question))).value();
      if (n == 0) return 0;  // the parent hung up
      std::string answer = "child heard '" + std::string(question, n) + "'";
      me.out.write_all(answer).value();
    }
  });
  auto& me = duplex.first;
  duplex.second.in.close().value();
  duplex.second.out.close().value();
  for (std::string q : {"ping", "how are you"}) {
    me.out.write_all(q).value();
    char answer[128];
    auto n = me.in.read(std::as_writable_bytes(std::span(answer))).value();
    std::printf("parent asked '%s', %.*s\n", q.c_str(), static_cast<int>(n), answer);
  }
  me.out.close().value();
  std::printf("child %s\n", child->wait()->describe().c_str());
}
