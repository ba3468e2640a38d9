// A small benchmark harness for IPC: a peer process pinned to another CPU,
// variants interleaved in batches so that machine noise hits every variant
// alike, and summaries as median and p99 rather than means.
#pragma once

#include <sched.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace bench {

using clock = std::chrono::steady_clock;

inline double micros_since(clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(clock::now() - t0).count();
}

struct Stats {
  double median = 0, p99 = 0;
  std::size_t n = 0;
};

inline Stats summarize(std::vector<double> v) {
  Stats s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.median = v[v.size() / 2];
  s.p99 = v[std::min(v.size() - 1, v.size() * 99 / 100)];
  return s;
}

// Pins the calling thread to one CPU; ignored where that CPU does not exist.
inline void pin(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  (void)sched_setaffinity(0, sizeof set, &set);
}

// The two CPUs to use: 0 and 1 when there are two or more, else both 0.
inline std::pair<int, int> cpu_pair() {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return {0, n > 1 ? 1 : 0};
}

// Forks a peer pinned to `cpu` that runs `body` and exits with its result.
// Raw fork on purpose: the harness must not depend on what it measures.
inline pid_t start_peer(int cpu, const std::function<int()>& body) {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(1);
  }
  if (pid == 0) {
    pin(cpu);
    _exit(body());
  }
  return pid;
}

inline void join_peer(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "benchmark peer failed (status %#x)\n", status);
    std::exit(1);
  }
}

inline std::string machine_description() {
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.starts_with("model name")) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  utsname u{};
  uname(&u);
  return model + ", " + std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs, Linux " + u.release;
}

// Runs every variant `rounds` times in turn (A B C A B C ...) and gathers
// each variant's samples.
inline std::vector<std::vector<double>> interleave(
    int rounds, const std::vector<std::function<std::vector<double>()>>& variants) {
  std::vector<std::vector<double>> all(variants.size());
  for (int r = 0; r < rounds; ++r) {
    for (std::size_t v = 0; v < variants.size(); ++v) {
      auto samples = variants[v]();
      all[v].insert(all[v].end(), samples.begin(), samples.end());
    }
  }
  return all;
}

// "64 B", "4 KiB", "1 MiB".
inline std::string size_name(std::size_t n) {
  if (n >= (1u << 20)) return std::to_string(n >> 20) + " MiB";
  if (n >= 1024) return std::to_string(n >> 10) + " KiB";
  return std::to_string(n) + " B";
}

inline bool quick_mode(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--quick") return true;
  }
  return false;
}

}  // namespace bench
