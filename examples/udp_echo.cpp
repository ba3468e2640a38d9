// A UDP echo server on loopback and a client, as two processes.
//
// UDP keeps each datagram whole, and promises nothing else: a datagram may
// be lost (or, off loopback, duplicated or reordered). So the client waits
// for each answer with a deadline and asks again if none came; a real
// protocol would also number its requests to spot duplicates.
#include <chrono>
#include <cstdio>
#include <string>

#include <tether/tether.hpp>

int main() {
  using namespace std::chrono_literals;
  auto server = tether::UdpSocket::bind("127.0.0.1", 0).value();  // any free port
  std::uint16_t port = server.local_address().port();
  auto echo = tether::fork([&] {
    char buf[1500];
    for (;;) {  // echo each datagram to its sender, until "bye"
      auto got = server.recv_from(std::as_writable_bytes(std::span(buf)), 10s);
      if (!got) return 1;
      std::string_view text(buf, got->size);
      if (!server.send_to(std::as_bytes(std::span(text)), got->from, 10s)) return 1;
      if (text == "bye") return 0;
    }
  });
  server.close().value();  // the child has its own copy

  auto client = tether::udp_connect("127.0.0.1", port).value();
  for (std::string line : {"hello", "echo?", "bye"}) {
    std::string back(1500, '\0');
    tether::Result<std::size_t> n = tether::fail(ETIMEDOUT, "no answer");
    for (int attempt = 0; attempt < 3 && !n; ++attempt) {
      client.send(line, 10s).value();
      n = client.recv(std::as_writable_bytes(std::span(back)), 2s);
      if (!n && n.error() != std::errc::timed_out) break;  // a real error, not a loss
    }
    if (!n) return std::printf("%s: %s\n", line.c_str(), n.error().message().c_str()), 1;
    back.resize(*n);
    if (line != "bye") std::printf("sent %s, got back %s\n", line.c_str(), back.c_str());
  }
  std::printf("server %s\n", echo->wait(10s)->describe().c_str());
}
