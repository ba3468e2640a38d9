// A queue between two unrelated programs, by name:
//   queue_named serve /jobs     makes the queue, takes jobs until "quit"
//   queue_named send /jobs      opens it, sends three jobs and "quit"
// The server owns the name and removes it when it ends; the sender waits
// (up to 5 s) for the server to have made it.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include <tether/tether.hpp>

namespace {
int failed(const tether::Error& e) {
  std::fprintf(stderr, "%s\n", e.message().c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  if (argc != 3 || (std::strcmp(argv[1], "serve") != 0 && std::strcmp(argv[1], "send") != 0)) {
    std::fprintf(stderr, "usage: %s serve|send /NAME\n", argv[0]);
    return 2;
  }
  const std::string name = argv[2];
  if (std::strcmp(argv[1], "serve") == 0) {
    auto q = tether::Queue::create(name, {.max_message = 256});
    if (!q) return failed(q.error());
    for (;;) {
      auto job = q->get_string(30s);
      if (!job) return failed(job.error());
      if (*job == "quit") break;
      std::printf("server %d got: %s\n", static_cast<int>(::getpid()), job->c_str());
    }
    std::printf("server: done, removing %s\n", name.c_str());
    return 0;
  }
  auto until = std::chrono::steady_clock::now() + 5s;
  auto q = tether::Queue::open(name);
  while (!q && q.error() == std::errc::no_such_file_or_directory &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(10ms);
    q = tether::Queue::open(name);
  }
  if (!q) return failed(q.error());
  for (const char* job : {"resize photo 1", "resize photo 2", "send the report", "quit"})
    if (auto ok = q->put(job); !ok) return failed(ok.error());
  return 0;
}
