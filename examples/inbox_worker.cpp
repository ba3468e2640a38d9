// A worker program of your own under `tether open`: it says when it is
// ready, then reads the lines sent with `tether send`, either blocking
// (waits for a command) or, with --poll MS, polling (does other work while
// no command comes) — the two flavours of the reference FIFO workers.
//
//   tether open --wait-ready -- ./inbox_worker --poll 500
//   tether send inbox_worker hello
//   tether logs inbox_worker
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <tether/tether.hpp>

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  bool polling = argc == 3 && std::string(argv[1]) == "--poll";
  auto interval = std::chrono::milliseconds(polling ? std::atoi(argv[2]) : 0);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // stdout is the log: a line at a time
  std::printf("worker %d: ready (%s)\n", getpid(), polling ? "polling" : "blocking");
  if (auto r = tether::WorkerInbox::notify_ready(); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
  }
  auto inbox = tether::WorkerInbox::standard_input();
  int idle = 0;
  for (;;) {
    std::string command;
    if (polling) {
      auto got = inbox.poll(interval);
      if (!got) break;  // end of input: the supervisor is stopping us
      if (!*got) {
        ++idle;  // nothing came: do something else meanwhile
        continue;
      }
      command = **got;
    } else {
      auto got = inbox.next();
      if (!got) break;
      command = *got;
    }
    std::printf("worker %d: command '%s' (idle polls so far: %s)\n", getpid(), command.c_str(),
                polling ? std::to_string(idle).c_str() : "n/a");
    if (command == "quit") break;
  }
  std::printf("worker %d: bye\n", getpid());
  return 0;
}
