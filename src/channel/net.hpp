// Private to the channel layer: name resolution and socket helpers shared by
// TCP (socket.cpp), UDP (udp.cpp) and Channel (channel.cpp).
#pragma once

#include <netdb.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "tether/channel/socket.hpp"
#include "tether/sys.hpp"

namespace tether::detail {

// The result list of getaddrinfo(3), freed with it.
struct AddrInfo {
  addrinfo* list = nullptr;
  AddrInfo() = default;
  AddrInfo(const AddrInfo&) = delete;
  AddrInfo& operator=(const AddrInfo&) = delete;
  ~AddrInfo() {
    if (list) ::freeaddrinfo(list);
  }
};

// getaddrinfo(host, port) for `socktype` (SOCK_STREAM, SOCK_DGRAM). An
// error keeps getaddrinfo's own code in resolver_category() (or the errno
// of EAI_SYSTEM): "resolve no.such.host:80: Name or service not known
// (EAI_NONAME)".
Result<void> resolve(std::string_view host, std::uint16_t port, int socktype, bool passive,
                     AddrInfo& out);

// "host:port", with brackets around an IPv6 host: "[::1]:80".
std::string host_port(std::string_view host, std::uint16_t port);

// The port of a bound socket (getsockname), 0 if it cannot be read.
std::uint16_t bound_port(int fd);

// wait_fd() whose error says what was awaited: "wait for a message on
// unix:/x: Connection timed out (ETIMEDOUT)". The text is built only when
// the wait fails: a wait is on the path of every receive with a deadline.
inline Result<void> await_event(int fd, short events, Deadline deadline, std::string_view awaited,
                                std::string_view what) {
  auto ready = wait_fd(fd, events, deadline, what);
  if (ready) return {};
  std::string context = "wait for ";
  context += awaited;
  context += what;
  return std::unexpected(Error(ready.error().code(), std::move(context)));
}

}  // namespace tether::detail
