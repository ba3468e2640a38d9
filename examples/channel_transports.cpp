// The same program over every transport: only the address changes.
//   channel_transports [ADDRESS...]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <tether/tether.hpp>

// A server that answers one request, and a forked client that asks.
int talk_over(const std::string& address) {
  using namespace std::chrono_literals;
  auto server = tether::ChannelListener::listen(address);
  if (!server) return std::printf("%s: %s\n", address.c_str(), server.error().message().c_str()), 1;
  auto client = tether::fork([&] {
    auto ch = tether::Channel::connect(server->address(), 10s);
    if (!ch) return std::fprintf(stderr, "client: %s\n", ch.error().message().c_str()), 1;
    if (auto sent = ch->send("hello from pid " + std::to_string(getpid())); !sent) {
      return std::fprintf(stderr, "client: %s\n", sent.error().message().c_str()), 1;
    }
    auto reply = ch->recv_string(10s);
    return reply && *reply == "got it" ? 0 : 1;
  });
  // Errors are reported, never thrown: the listener must live to remove
  // the socket files, FIFOs and queues it made.
  auto conn = server->accept(10s);
  if (!conn) return std::printf("%s: %s\n", address.c_str(), conn.error().message().c_str()), 1;
  auto request = conn->recv_string(10s);
  if (!request)
    return std::printf("%s: %s\n", address.c_str(), request.error().message().c_str()), 1;
  if (auto sent = conn->send("got it", 10s); !sent) {
    return std::printf("%s: %s\n", address.c_str(), sent.error().message().c_str()), 1;
  }
  auto status = client->wait(10s);
  if (!status) return std::printf("%s: %s\n", address.c_str(), status.error().message().c_str()), 1;
  std::string scheme = address.substr(0, address.find(':'));
  std::printf("%-15s server heard '%s'; client %s\n", scheme.c_str(), request->c_str(),
              status->describe().c_str());
  return status->success() ? 0 : 1;
}

int main(int argc, char** argv) {
  std::string tmp = "/tmp/channel-transports-" + std::to_string(getpid());
  std::vector<std::string> addresses(argv + 1, argv + argc);
  if (addresses.empty()) {
    std::string pid = std::to_string(getpid());
    addresses = {"unix:" + tmp + ".sock",
                 "unix-seqpacket:" + tmp + ".seq",
                 "unix-abstract:channel-transports-" + pid,
                 "tcp://127.0.0.1:0",
                 "fifo:" + tmp + ".fifo",
                 "mq:/channel-transports-" + pid,
                 "sysv:" + std::to_string(0x7d000000 + (getpid() & 0xffffff))};
  }
  int failures = 0;
  for (const auto& a : addresses) failures += talk_over(a);
  return failures;
}
