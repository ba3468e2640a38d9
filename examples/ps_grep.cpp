// Two children joined by a pipe, like `ps aux | grep bash`: the dup2 plumbing
// is done by Pipeline, and every stage's status is reported.
#include <signal.h>

#include <cstdio>

#include <tether/process.hpp>

int main() {
  using tether::Command;
  // A bash whose name we can find, running while we look ("; true" keeps
  // bash from exec'ing sleep in its place).
  // In a process group of its own, so that stopping it stops its sleep too.
  auto bash = Command("bash").args({"-c", "sleep 5; true"}).new_process_group().spawn().value();
  auto job = Command("ps").arg("aux") | Command("grep").arg("[b]ash -c sleep");
  auto result = job.output().value();
  std::printf("%s: found %s\n", job.describe().c_str(),
              result.out.find("bash -c sleep") != std::string::npos ? "the bash" : "nothing");
  for (std::size_t i = 0; i < result.statuses.size(); ++i) {
    std::printf("stage %zu %s\n", i, result.statuses[i].describe().c_str());
  }
  bash.signal_group(SIGKILL).value();  // bash and its sleep
  bash.wait().value();
}
