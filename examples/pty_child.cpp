// A child on a pseudo-terminal, as Python's pty.fork gives one: the child
// believes a person sits at a terminal (tty, test -t, stty size, a prompt),
// and the parent plays that person through the master end.
#include <cstdio>
#include <string>

#include <tether/tether.hpp>

using namespace std::chrono_literals;

namespace {

// What the terminal shows, with its "\r\n" line ends turned back into "\n".
void show(std::string text) {
  for (std::size_t at; (at = text.find("\r\n")) != std::string::npos;) text.erase(at, 1);
  std::fputs(text.c_str(), stdout);
}

}  // namespace

int main() {
  auto child = tether::Command("sh")
                   .args({"-c",
                          "tty; test -t 0 && echo 'stdin is a terminal'; stty size; "
                          "printf 'name? '; read name; echo \"hello, $name\""})
                   .pty({.rows = 24, .cols = 80})
                   .spawn();
  if (!child) {
    std::fprintf(stderr, "%s\n", child.error().message().c_str());
    return 1;
  }
  tether::Pty& terminal = child->pty();

  // Answer the prompt once it is there: the terminal echoes what we type.
  std::string seen;
  if (auto r = terminal.read_until(seen, "name? ", 10s); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  if (auto r = terminal.write_all("world\n", 10s); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  // The rest, up to the end of stream the child's exit brings.
  auto rest = terminal.read_all(10s);
  if (!rest) {
    std::fprintf(stderr, "%s\n", rest.error().message().c_str());
    return 1;
  }
  show(seen + *rest);
  std::printf("child %s\n", child->wait()->describe().c_str());
}
