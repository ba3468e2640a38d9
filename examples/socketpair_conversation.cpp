// A parent and a child talk over a socketpair, as whole messages.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <tether/tether.hpp>

int main() {
  using namespace std::chrono_literals;
  auto [parent_end, child_end] = tether::Channel::socket_pair().value();
  auto child = tether::fork([&] {
    parent_end.close().value();
    while (auto question = child_end.recv_string(10s)) {
      child_end.send("child " + std::to_string(getpid()) + " answers '" + *question + "'").value();
    }
    return 0;  // end of stream: the parent hung up
  });
  child_end.close().value();
  for (std::string q : {"ping", "what is 6 x 7?"}) {
    parent_end.send(q).value();
    std::printf("%s\n", parent_end.recv_string(10s).value().c_str());
  }
  parent_end.close().value();
  std::printf("child %s\n", child->wait()->describe().c_str());
}
