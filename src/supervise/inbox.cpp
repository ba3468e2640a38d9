// The worker's side: lines from `tether send` on standard input, and the
// readiness line for `tether open --wait-ready`.
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "tether/supervise.hpp"

namespace tether {

Result<std::string> WorkerInbox::next(Deadline deadline) {
  for (;;) {
    if (auto line = reader_.next()) return std::string(line->text);
    if (auto w = wait_fd(fd_, POLLIN, deadline, "the worker's input"); !w) {
      return std::unexpected(w.error());
    }
    char buf[4096];
    ssize_t n = retry_eintr([&] { return ::read(fd_, buf, sizeof buf); });
    if (n < 0) {
      if (errno == EAGAIN) continue;
      return fail(errno, "read the worker's input");
    }
    if (n == 0) {
      // End of input: a last line without its newline still counts.
      if (reader_.partial_size() > 0) return reader_.take_partial();
      return fail(errc::end_of_stream, "read the worker's input");
    }
    reader_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
  }
}

Result<std::optional<std::string>> WorkerInbox::poll(Deadline wait) {
  auto line = next(wait);
  if (line) return std::optional<std::string>(std::move(*line));
  if (line.error() == std::errc::timed_out) return std::optional<std::string>();
  return std::unexpected(line.error());
}

Result<void> WorkerInbox::notify_ready() {
  const char* v = std::getenv("TETHER_READY_FD");
  if (!v || !*v) return {};
  int fd = -1;
  auto [end, ec] = std::from_chars(v, v + std::strlen(v), fd);
  if (ec != std::errc() || *end != '\0' || fd < 3) {
    return fail(EINVAL, fmt::format("TETHER_READY_FD='{}': not a descriptor", v));
  }
  Fd owned(fd);
  const char line[] = "ready\n";
  auto n = write_some(fd, std::as_bytes(std::span(line, sizeof line - 1)), "the readiness fd");
  if (!n) return std::unexpected(n.error());
  ::unsetenv("TETHER_READY_FD");
  return owned.close();
}

}  // namespace tether
