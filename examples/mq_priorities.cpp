// A POSIX message queue delivers the highest priority first.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <tether/channel.hpp>

int main() {
  using namespace std::chrono_literals;
  auto q = tether::PosixQueue::create("/mq-priorities-" + std::to_string(getpid())).value();
  q.send("routine report", 1).value();
  q.send("fire alarm", 9).value();
  q.send("lunch menu", 0).value();
  q.send("server down", 7).value();
  std::printf("%ld messages waiting\n", q.attributes().value().depth);
  for (int i = 0; i < 4; ++i) {
    auto m = q.recv(1s).value();
    std::printf("priority %u: %.*s\n", m.priority, static_cast<int>(m.text().size()),
                m.text().data());
  }
}  // the queue's name is removed by its owner here
