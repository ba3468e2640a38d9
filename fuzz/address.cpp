// fuzz_address: Channel addresses ("unix:/p", "tcp://[::1]:80", "sysv:0x12" …).
//
// The address parser is private to src/channel/channel.cpp; the public way
// in is Channel::connect, which goes on to open what the address names. So
// that no input reaches anything real or creates anything:
//   - the target runs in new network and IPC namespaces (unshare at start,
//     with a user namespace when not privileged): no interface is up, so
//     tcp:// and udp:// (names included: no DNS server is reachable) fail
//     at once, and the abstract Unix namespace, POSIX queues and System V
//     queues are all empty;
//   - file system addresses (unix:, unix-seqpacket:, fifo:) are put under a
//     new empty directory (an input containing ".." is skipped), where no
//     socket or FIFO exists; connect and Fifo::attach create nothing;
//   - the deadline is immediate.
// Every connect must then fail, cleanly, and leak no descriptor. The public
// pure pieces (SysvKey::parse, check_posix_ipc_name, UnixAddress) are fed
// the same text. A pure parse_address() seam would let the parser itself be
// checked field by field (docs/fuzzing.md).
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "check.hpp"
#include "tether/channel/channel.hpp"

namespace {

std::string g_root;  // the empty directory that file addresses land in
int g_fds = -1;

bool starts(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (::unshare(CLONE_NEWNET | CLONE_NEWIPC) != 0 &&
      ::unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC) != 0) {
    std::fprintf(stderr,
                 "fuzz_address: cannot enter new network and IPC namespaces (%s): refusing to "
                 "connect anywhere real\n",
                 std::strerror(errno));
    std::exit(1);
  }
  char dir[] = "/tmp/tether-fuzz-address-XXXXXX";
  if (::mkdtemp(dir) == nullptr) {
    std::perror("fuzz_address: mkdtemp");
    std::exit(1);
  }
  g_root = dir;
  std::atexit([] { ::rmdir(g_root.c_str()); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (g_fds < 0) g_fds = tether::count_open_fds().value_or(-1);

  // The pure public pieces, on the part after any scheme.
  auto colon = text.find(':');
  std::string_view tail = colon == std::string_view::npos ? text : text.substr(colon + 1);
  if (auto key = tether::SysvKey::parse(tail)) {
    FUZZ_CHECK(!key->is_private(), "SysvKey::parse gave IPC_PRIVATE for '%.*s'",
               static_cast<int>(tail.size()), tail.data());
  }
  (void)tether::check_posix_ipc_name(tail, "fuzz");
  (void)tether::UnixAddress::abstract(tail);
  if (tail.find('\0') == std::string_view::npos) (void)tether::UnixAddress::path(std::string(tail));

  // Connect, kept away from anything real (see the top of this file).
  std::string address(text);
  for (std::string_view scheme : {"unix-seqpacket:", "unix:", "fifo:"}) {
    if (!starts(text, scheme)) continue;
    std::string_view where = text.substr(scheme.size());
    if (where.find("..") != std::string_view::npos) return -1;
    address = std::string(scheme) + g_root + (starts(where, "/") ? "" : "/") + std::string(where);
    break;
  }
  tether::ChannelOptions options;
  options.max_message = 4096;
  options.buffer_size = 0;
  auto c = tether::Channel::connect(address, tether::Deadline::immediate(), options);
  // A UDP "connect" only sets a peer address (nothing is sent); any other
  // success would mean the sandbox let something real through.
  FUZZ_CHECK(!c || starts(address, "udp://"), "connect to '%s' succeeded: it reached something",
             address.c_str());
  if (!c) FUZZ_CHECK(!c.error().message().empty(), "an error without a message");

  static unsigned runs = 0;
  if (++runs % 1024 == 0 && g_fds >= 0) {
    int now = tether::count_open_fds().value_or(-1);
    FUZZ_CHECK(now == g_fds, "descriptors: %d at start, %d now", g_fds, now);
  }
  return 0;
}
