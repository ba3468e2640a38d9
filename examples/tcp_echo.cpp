// A TCP echo server on loopback and a client, as two processes.
#include <chrono>
#include <cstdio>
#include <string>

#include <tether/tether.hpp>

int main() {
  using namespace std::chrono_literals;
  auto listener = tether::TcpListener::listen("127.0.0.1", 0).value();  // any free port
  std::uint16_t port = listener.port();
  auto server = tether::fork([&] {
    auto conn = listener.accept(10s);
    if (!conn) return 1;
    char buf[256];
    for (;;) {  // echo until the client closes
      auto n = conn->recv(std::as_writable_bytes(std::span(buf)), 10s);
      if (!n || *n == 0) return n ? 0 : 1;
      if (!conn->send_all(std::as_bytes(std::span(buf, *n)), 10s)) return 1;
    }
  });
  auto client = tether::tcp_connect("127.0.0.1", port, 10s).value();
  for (std::string line : {"hello\n", "echo?\n"}) {
    client.send_all(line).value();
    std::string back(line.size(), '\0');
    client.recv_exact(std::as_writable_bytes(std::span(back)), 10s).value();
    std::printf("sent %.*s, got back %s", static_cast<int>(line.size() - 1), line.c_str(),
                back.c_str());
  }
  client.close().value();
  std::printf("server %s\n", server->wait(10s)->describe().c_str());
}
