// A FIFO reader that keeps reading while writers come and go (here: shell
// `echo` commands), without ever seeing end of stream and without spinning.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include <tether/tether.hpp>

int main() {
  using namespace std::chrono_literals;
  auto path =
      std::filesystem::temp_directory_path() / ("fifo-listener-" + std::to_string(getpid()));
  auto fifo = tether::Fifo::create(path).value();
  auto reader = fifo.open_reader({}, {.keep_listening = true}).value();
  for (int i = 1; i <= 3; ++i) {
    // Each writer is a separate shell process: it opens, writes, closes.
    tether::Command("sh")
        .args({"-c", "echo \"line $1\" > \"$0\"", path.string(), std::to_string(i)})
        .status()
        .value();
  }
  std::string got;
  while (got.size() < 21) {  // "line 1\nline 2\nline 3\n"
    char buf[64];
    auto n = reader.read(std::as_writable_bytes(std::span(buf)), 10s).value();
    got.append(buf, n);
  }
  std::printf("%s", got.c_str());
  std::array<std::byte, 8> buf;
  auto idle = reader.read(buf, 100ms);  // no writer now: we wait, we do not see end of stream
  std::printf("no writer left: %s\n", idle                                   ? "data?"
                                      : idle.error() == std::errc::timed_out ? "still listening"
                                                                             : "error");
}
