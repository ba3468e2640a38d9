// fuzz_frame: the stream framer (4-byte little-endian length, then the
// payload) and the seqpacket receiver, fed arbitrary bytes through a real
// socketpair or pipe with the public Channel API.
//
// Input: [transport] [max_message] [mode] [chunk] then the bytes the peer
// writes. The bytes go in whole, or chunk by chunk with try_recv between
// chunks (messages cut by would-block are kept for the next call); then the
// writer closes and recv drains the channel. What comes out is compared
// with a reference decoder of the same bytes: the same messages, in order,
// then end_of_stream, truncated or EMSGSIZE where the reference says; after
// a framing error every call fails. No descriptor may leak.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "check.hpp"
#include "tether/channel/channel.hpp"

namespace {

enum class End { eos, truncated, too_big };
struct Expected {
  std::vector<std::string> messages;
  End end = End::eos;
};

// The frame format, written from docs/channels.md, not from the code.
Expected reference_stream(std::string_view s, std::size_t max) {
  Expected e;
  for (;;) {
    if (s.empty()) return e;
    if (s.size() < 4) return e.end = End::truncated, e;
    std::uint32_t len = 0;
    for (int i = 3; i >= 0; --i) len = len << 8 | static_cast<unsigned char>(s[i]);
    if (len > max) return e.end = End::too_big, e;
    if (s.size() - 4 < len) return e.end = End::truncated, e;
    e.messages.emplace_back(s.substr(4, len));
    s.remove_prefix(4 + len);
  }
}

std::string text(const std::vector<std::byte>& v) {
  return {reinterpret_cast<const char*>(v.data()), v.size()};
}

int g_fds = -1;

// Writes all of `bytes` to a non-blocking fd (the kernel buffer holds the
// whole input: it is capped well below a pipe's 64 KiB).
void put(int fd, std::string_view bytes, bool packet) {
  while (!bytes.empty() || packet) {
    ssize_t n = packet ? ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT)
                       : ::write(fd, bytes.data(), bytes.size());
    FUZZ_CHECK(n >= 0, "write to the peer: %s", std::strerror(errno));
    if (packet) return;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 32768) return -1;
  if (g_fds < 0) g_fds = tether::count_open_fds().value_or(-1);
  fuzz::Input in(data, size);
  int transport = in.byte() % 3;  // stream socket, pipe, seqpacket socket
  std::uint8_t m = in.byte();
  std::size_t max = m == 255 ? 65536 : m;
  std::uint8_t mode = in.byte();
  bool use_into = mode & 1;
  // Seqpacket always drains between packets: a socket's send buffer holds
  // only a few hundred small packets.
  bool chunked = (mode & 2) || transport == 2;
  std::size_t chunk = std::size_t{in.byte()} + 1;
  std::string_view stream = in.rest();

  tether::ChannelOptions options;
  options.max_message = max;
  options.buffer_size = 0;
  tether::Channel channel;
  tether::Fd writer;
  {
    if (transport == 1) {
      int a[2], b[2];
      FUZZ_CHECK(::pipe2(a, O_CLOEXEC) == 0 && ::pipe2(b, O_CLOEXEC) == 0, "pipe2");
      writer = tether::Fd(a[1]);
      ::close(b[0]);  // the channel's sending side has no reader: never used
      auto c = tether::Channel::over_pipes(tether::PipeReader(tether::Fd(a[0]), false),
                                           tether::PipeWriter(tether::Fd(b[1]), false), options);
      FUZZ_CHECK(c.has_value(), "over_pipes: %s", c.error().message().c_str());
      channel = std::move(*c);
    } else {
      auto p = tether::socket_pair(transport == 2 ? tether::SocketType::seqpacket
                                                  : tether::SocketType::stream);
      FUZZ_CHECK(p.has_value(), "socket_pair: %s", p.error().message().c_str());
      writer = std::move(p->second.handle());
      auto c = tether::Channel::over_socket(std::move(p->first), options);
      FUZZ_CHECK(c.has_value(), "over_socket: %s", c.error().message().c_str());
      channel = std::move(*c);
    }
  }
  ::fcntl(writer.get(), F_SETFL, O_NONBLOCK);

  // The pieces the peer writes: chunks of the stream, or (seqpacket) packets.
  std::vector<std::string_view> pieces;
  if (transport == 2 || chunked) {
    for (std::string_view s = stream; !s.empty(); s.remove_prefix(std::min(chunk, s.size())))
      pieces.push_back(s.substr(0, chunk));
  } else if (!stream.empty()) {
    pieces.push_back(stream);
  }

  Expected want;
  if (transport == 2) {
    // Each packet is a message; an empty one is end of stream (which is
    // why send refuses empty messages on seqpacket); one above the maximum
    // is refused (EMSGSIZE) and discarded, and the next one still comes.
    // Packets are at most 256 bytes here: none exceeds the largest expected.
    want.end = End::eos;
  } else {
    want = reference_stream(stream, max);
  }

  std::vector<std::string> got;
  std::vector<std::byte> into;
  std::optional<tether::Error> end;
  auto receive = [&](tether::Deadline d, bool try_only) -> bool {
    tether::Result<void> r;
    if (try_only) {
      auto msg = channel.try_recv();
      if (msg)
        got.push_back(text(*msg));
      else
        r = std::unexpected(msg.error());
    } else if (use_into) {
      r = channel.recv_into(into, d);
      if (r) got.push_back(text(into));
    } else {
      auto msg = channel.recv(d);
      if (msg)
        got.push_back(text(*msg));
      else
        r = std::unexpected(msg.error());
    }
    if (r) {
      FUZZ_CHECK(got.back().size() <= max, "a message of %zu bytes, above the maximum %zu",
                 got.back().size(), max);
      return true;
    }
    if (try_only && tether::would_block(r.error())) return false;
    if (transport == 2 && r.error() == std::errc::message_size) {
      // Discarded: record it as such and go on.
      got.push_back("<too big>");
      return true;
    }
    end = r.error();
    return false;
  };

  std::vector<std::string> want_packets;  // seqpacket: what each packet should give
  for (auto piece : pieces) {
    put(writer.get(), piece, transport == 2);
    if (transport == 2)
      want_packets.push_back(piece.size() > max ? "<too big>" : std::string(piece));
    if (chunked) {
      while (!end && receive(tether::Deadline::immediate(), true)) {
      }
      if (end) break;
    }
  }
  writer.reset();
  while (!end && receive(tether::Deadline(std::chrono::seconds(2)), false)) {
  }
  FUZZ_CHECK(end.has_value(), "the channel never ended");
  FUZZ_CHECK(!(*end == std::errc::timed_out), "timed out: %s", end->message().c_str());

  if (transport == 2) {
    // Pieces are never empty, so every packet is delivered or refused.
    FUZZ_CHECK(got == want_packets, "seqpacket: %zu messages, %zu packets", got.size(),
               want_packets.size());
    FUZZ_CHECK(*end == tether::errc::end_of_stream, "seqpacket ended with %s",
               end->message().c_str());
  } else {
    FUZZ_CHECK(got == want.messages, "%zu messages where the reference has %zu", got.size(),
               want.messages.size());
    switch (want.end) {
      case End::eos:
        FUZZ_CHECK(*end == tether::errc::end_of_stream, "want end_of_stream, got %s",
                   end->message().c_str());
        break;
      case End::truncated:
        FUZZ_CHECK(*end == tether::errc::truncated, "want truncated, got %s",
                   end->message().c_str());
        break;
      case End::too_big:
        FUZZ_CHECK(*end == std::errc::message_size, "want EMSGSIZE, got %s",
                   end->message().c_str());
        break;
    }
    // After the end, nothing more: every call fails.
    auto again = channel.recv(tether::Deadline::immediate());
    FUZZ_CHECK(!again, "a message after the stream ended");
  }
  (void)channel.close();

  static unsigned runs = 0;
  if (++runs % 1024 == 0 && g_fds >= 0) {
    int now = tether::count_open_fds().value_or(-1);
    FUZZ_CHECK(now == g_fds, "descriptors: %d at start, %d now", g_fds, now);
  }
  return 0;
}
