// Kill -9 at random instants in writers and readers of a shared-memory
// Dict (docs/queue.md), and check what it promises:
//   - no hang: after every kill the survivors keep going;
//   - no lost key: the keys that are only ever replaced are always there;
//   - nothing torn: every value read is whole (a self-checking pattern);
//   - old or new: a counter incremented under the lock by a killed writer
//     holds its last confirmed value or one more;
//   - consistency: size() equals the number of entries items() lists.
// After each kill the parent times a set() of its own: how long the dict
// takes to be usable again (it repairs what a writer left, if it died
// holding the lock), quoted as a distribution.
//
//   tether_stress_dict [--trials N] [--kills K] [--seed S]
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tether/queue.hpp"

namespace {

constexpr int kWriters = 2;
constexpr int kStable = 64;

struct Log {
  std::atomic<std::uint64_t> beats[kWriters + 1];
  std::atomic<std::uint64_t> confirmed[kWriters];  // last counter value a writer saw set
  std::atomic<std::uint64_t> torn, missing, errors;
};
Log* log_ = nullptr;

std::string patterned(std::size_t n, char c) {
  return std::to_string(n) + ":" + std::string(n, c);
}
bool well_formed(const std::string& v) {
  auto colon = v.find(':');
  if (colon == std::string::npos || colon == 0 || colon > 6) return false;
  std::size_t n = std::strtoul(v.substr(0, colon).c_str(), nullptr, 10);
  if (v.size() != colon + 1 + n) return false;
  for (std::size_t i = colon + 1; i < v.size(); ++i)
    if (v[i] != v[colon + 1]) return false;
  return true;
}

[[noreturn]] void writer(tether::Dict& d, int w, unsigned seed) {
  std::mt19937 rng(seed);
  const std::string counter = "counter-" + std::to_string(w);
  for (std::uint64_t r = 0;; ++r) {
    switch (rng() % 6) {
      case 0:
      case 1:
        (void)d.set("stable-" + std::to_string(rng() % kStable),
                    patterned(rng() % 400, static_cast<char>('a' + r % 26)));
        break;
      case 2:
        (void)d.set("churn-" + std::to_string(rng() % 400), patterned(rng() % 60, 'c'));
        break;
      case 3:
        (void)d.erase("churn-" + std::to_string(rng() % 400));
        break;
      case 4:
        (void)d.pop("churn-" + std::to_string(rng() % 400));
        break;
      default: {
        std::uint64_t now = 0;
        auto ok = d.update_value<std::uint64_t>(counter, [&](std::uint64_t& n) { now = ++n; });
        if (ok) log_->confirmed[w].store(now);
        break;
      }
    }
    log_->beats[w].fetch_add(1, std::memory_order_relaxed);
  }
}

[[noreturn]] void reader(tether::Dict& d) {
  std::string v;
  for (std::uint64_t r = 0;; ++r) {
    auto ok = d.get_into("stable-" + std::to_string(r % kStable), v);
    if (!ok)
      log_->missing.fetch_add(1);
    else if (!well_formed(v))
      log_->torn.fetch_add(1);
    log_->beats[kWriters].fetch_add(1, std::memory_order_relaxed);
  }
}

pid_t start(tether::Dict& d, int who, unsigned seed) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (who < kWriters) writer(d, who, seed);
    reader(d);
  }
  return pid;
}

// True once every process's heartbeat moved, within 10 s.
bool all_beating() {
  std::uint64_t before[kWriters + 1];
  for (int i = 0; i <= kWriters; ++i) before[i] = log_->beats[i].load();
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (int i = 0; i <= kWriters; ++i) {
    while (log_->beats[i].load() == before[i]) {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  return true;
}

struct Totals {
  std::uint64_t trials = 0, kills = 0, hangs = 0, lost = 0, torn = 0, counter_wrong = 0,
                inconsistent = 0, failures = 0, repairs = 0;
  std::vector<double> recovery_us;
};

void trial(std::mt19937& rng, int kills, Totals& t) {
  ++t.trials;
  auto d = tether::Dict::anonymous({.capacity = 16, .typical_entry = 64});
  if (!d) {
    std::printf("make: %s\n", d.error().message().c_str());
    ++t.failures;
    return;
  }
  for (int i = 0; i < kStable; ++i) (void)d->set("stable-" + std::to_string(i), patterned(5, 's'));
  for (auto& b : log_->beats) b.store(0);
  for (auto& c : log_->confirmed) c.store(0);
  pid_t pids[kWriters + 1];
  for (int i = 0; i <= kWriters; ++i) pids[i] = start(*d, i, static_cast<unsigned>(rng()));
  for (int k = 0; k < kills; ++k) {
    std::this_thread::sleep_for(std::chrono::microseconds(2000 + rng() % 20000));
    const int victim = static_cast<int>(rng() % (kWriters + 1));
    ::kill(pids[victim], SIGKILL);
    ::waitpid(pids[victim], nullptr, 0);
    ++t.kills;
    auto t0 = std::chrono::steady_clock::now();
    if (!d->set("probe", patterned(3, 'p'))) ++t.failures;
    t.recovery_us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    if (victim < kWriters) {
      // The counter holds the dead writer's last confirmed value, or one more.
      auto n = d->get_value<std::uint64_t>("counter-" + std::to_string(victim));
      const std::uint64_t c = log_->confirmed[victim].load();
      if (n ? (*n != c && *n != c + 1) : c != 0) {
        std::printf("counter-%d: %llu, last confirmed %llu\n", victim,
                    n ? static_cast<unsigned long long>(*n) : 0ULL,
                    static_cast<unsigned long long>(c));
        ++t.counter_wrong;
      }
      if (n) log_->confirmed[victim].store(*n);
    }
    for (int i = 0; i < kStable; ++i) {
      auto v = d->get("stable-" + std::to_string(i));
      if (!v)
        ++t.lost;
      else if (!well_formed(*v))
        ++t.torn;
    }
    pids[victim] = start(*d, victim, static_cast<unsigned>(rng()));
    if (!all_beating()) {
      std::printf("hang after kill %d of trial %llu\n", k,
                  static_cast<unsigned long long>(t.trials));
      ++t.hangs;
      break;
    }
  }
  for (pid_t p : pids) {
    ::kill(p, SIGKILL);
    ::waitpid(p, nullptr, 0);
  }
  auto items = d->items();
  if (!items || items->size() != d->size()) ++t.inconsistent;
  if (items)
    for (auto& [k, v] : *items)
      if (k != "counter-0" && k != "counter-1" && !well_formed(v)) ++t.torn;
  t.lost += log_->missing.exchange(0);
  t.torn += log_->torn.exchange(0);
  t.repairs += d->stats().repairs;
}

}  // namespace

int main(int argc, char** argv) {
  int trials = 20, kills = 20;
  unsigned seed = static_cast<unsigned>(std::random_device{}());
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--trials") trials = std::atoi(argv[i + 1]);
    if (a == "--kills") kills = std::atoi(argv[i + 1]);
    if (a == "--seed") seed = static_cast<unsigned>(std::strtoul(argv[i + 1], nullptr, 10));
  }
  void* mem =
      ::mmap(nullptr, sizeof(Log), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 1;
  log_ = new (mem) Log();
  std::printf("stress_dict: %d trials, %d kills each, seed %u\n", trials, kills, seed);
  std::mt19937 rng(seed);
  Totals t;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < trials; ++i) trial(rng, kills, t);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::sort(t.recovery_us.begin(), t.recovery_us.end());
  auto pct = [&](double q) {
    return t.recovery_us.empty() ? 0.0
                                 : t.recovery_us[static_cast<std::size_t>(
                                       q * static_cast<double>(t.recovery_us.size() - 1))];
  };
  std::printf(
      "%llu trials, %llu kills in %.1f s: hangs %llu, stable keys lost %llu, torn %llu, "
      "counters neither old nor new %llu, inconsistent %llu, failures %llu; %llu repairs after a "
      "writer died holding the lock; a set after a kill took median %.1f us, p99 %.1f us, max "
      "%.1f us\n",
      static_cast<unsigned long long>(t.trials), static_cast<unsigned long long>(t.kills), secs,
      static_cast<unsigned long long>(t.hangs), static_cast<unsigned long long>(t.lost),
      static_cast<unsigned long long>(t.torn), static_cast<unsigned long long>(t.counter_wrong),
      static_cast<unsigned long long>(t.inconsistent), static_cast<unsigned long long>(t.failures),
      static_cast<unsigned long long>(t.repairs), pct(0.5), pct(0.99), pct(1.0));
  bool ok = t.hangs == 0 && t.lost == 0 && t.torn == 0 && t.counter_wrong == 0 &&
            t.inconsistent == 0 && t.failures == 0;
  std::printf(ok ? "all trials passed\n" : "FAILED\n");
  return ok ? 0 : 1;
}
