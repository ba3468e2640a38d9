// A Unix socket server with several clients, checking who each one is.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <tether/tether.hpp>

int main() {
  using namespace std::chrono_literals;
  std::string path = "/tmp/unix-server-" + std::to_string(getpid()) + ".sock";
  // Same-user peers only (the default policy); the file is 0600.
  auto server = tether::ChannelListener::listen("unix:" + path).value();
  std::vector<tether::Process> clients;
  for (int i = 1; i <= 3; ++i) {
    clients.push_back(tether::fork([&, i] {
                        auto ch = tether::Channel::connect("unix:" + path, 10s);
                        if (!ch || !ch->send("client " + std::to_string(i) + " checking in"))
                          return 1;
                        auto reply = ch->recv_string(10s);
                        return reply && reply->starts_with("welcome") ? 0 : 1;
                      }).value());
  }
  for (int i = 0; i < 3; ++i) {
    auto conn = server.accept(10s).value();
    auto hello = conn.recv_string(10s).value();
    conn.send("welcome").value();
    std::printf("accepted: %s (same user: yes)\n", hello.substr(0, 8).c_str());
  }
  int ok = 0;
  for (auto& c : clients) ok += c.wait(10s).value().success();
  std::printf("%d clients served\n", ok);
}
