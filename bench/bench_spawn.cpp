// Spawn + wait of /bin/true: tether's Command next to raw posix_spawn +
// waitpid and fork + execve + waitpid, interleaved in the same run.
//
//   bench_spawn [--quick]
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include "harness.hpp"
#include "tether/process.hpp"

extern char** environ;

namespace {

const char* const kProgram = "/bin/true";

void reap(pid_t pid) {
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) std::abort();
}

std::vector<double> with_posix_spawn(int n) {
  std::vector<double> samples;
  char* argv[] = {const_cast<char*>(kProgram), nullptr};
  for (int i = 0; i < n; ++i) {
    auto t0 = bench::clock::now();
    pid_t pid;
    if (posix_spawn(&pid, kProgram, nullptr, nullptr, argv, environ) != 0) std::abort();
    reap(pid);
    samples.push_back(bench::micros_since(t0));
  }
  return samples;
}

std::vector<double> with_fork_exec(int n) {
  std::vector<double> samples;
  char* argv[] = {const_cast<char*>(kProgram), nullptr};
  for (int i = 0; i < n; ++i) {
    auto t0 = bench::clock::now();
    pid_t pid = fork();
    if (pid == 0) {
      execve(kProgram, argv, environ);
      _exit(127);
    }
    reap(pid);
    samples.push_back(bench::micros_since(t0));
  }
  return samples;
}

std::vector<double> with_tether(int n) {
  std::vector<double> samples;
  const tether::Command cmd(kProgram);
  for (int i = 0; i < n; ++i) {
    auto t0 = bench::clock::now();
    auto p = cmd.spawn();
    if (!p || !p->wait()->success()) std::abort();
    samples.push_back(bench::micros_since(t0));
  }
  return samples;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = bench::quick_mode(argc, argv);
  int rounds = quick ? 1 : 10, batch = quick ? 20 : 200;
  fmt::print("# spawn + wait benchmark ({})\n\n", bench::machine_description());
  auto all = bench::interleave(
      rounds, {[&] { return with_posix_spawn(batch); }, [&] { return with_fork_exec(batch); },
               [&] { return with_tether(batch); }});
  auto ps = bench::summarize(all[0]), fe = bench::summarize(all[1]), te = bench::summarize(all[2]);
  fmt::print("## spawn + wait of {} ({} each, interleaved)\n\n", kProgram, ps.n);
  fmt::print("| variant | median µs | p99 µs | spawns/s (from median) |\n|---|---:|---:|---:|\n");
  for (auto [name, s] :
       {std::pair{"posix_spawn + waitpid", ps}, std::pair{"fork + execve + waitpid", fe},
        std::pair{"tether Command::spawn + wait", te}}) {
    fmt::print("| {} | {:.1f} | {:.1f} | {:.0f} |\n", name, s.median, s.p99, 1e6 / s.median);
  }
  fmt::print("\ntether / posix_spawn, median: {:.3f}\ntether / fork+exec, median: {:.3f}\n",
             te.median / ps.median, te.median / fe.median);
  return 0;
}
