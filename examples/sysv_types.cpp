// A System V queue shared by several readers, each picking messages by type.
#include <chrono>
#include <cstdio>

#include <tether/tether.hpp>

int main() {
  using namespace std::chrono_literals;
  auto q = tether::SysvQueue::create(tether::SysvQueue::private_key).value();
  q.send(2, "order #1 for the kitchen").value();
  q.send(1, "order #2 for the bar").value();
  q.send(2, "order #3 for the kitchen").value();
  q.send(3, "complaint for the manager").value();
  // A forked "kitchen" worker takes only type 2.
  auto kitchen = tether::fork([&] {
    for (int i = 0; i < 2; ++i) {
      auto m = q.recv(2, 5s);
      if (!m) return 1;
      std::printf("kitchen got: %.*s\n", static_cast<int>(m->text().size()), m->text().data());
    }
    return 0;
  });
  kitchen->wait(10s).value();
  // What is left, lowest type first: recv(-3) takes the lowest type <= 3.
  for (int i = 0; i < 2; ++i) {
    auto m = q.recv(-3, 1s).value();
    std::printf("type %ld: %.*s\n", m.type, static_cast<int>(m.text().size()), m.text().data());
  }
}
