// Two processes each add 1 to a counter in shared memory 100,000 times.
// With a lock the total is exact. Without one, updates are lost: "read the
// counter, add one, write it back" in one process interleaves with the
// same in the other, and one of two writes of the same value is wasted.
// And memory that is not put in shared memory is not shared at all.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <tether/tether.hpp>

namespace {

int failed(const tether::Error& e) {
  std::fprintf(stderr, "%s\n", e.message().c_str());
  return 1;
}

constexpr long kTimes = 100'000;

struct Counters {
  tether::Mutex lock;
  long locked = 0;                // changed only with `lock` held
  std::atomic<long> unlocked{0};  // read, then written back, with no lock
  std::atomic<int> ready{0};      // workers at the start line
};

long plain = 0;  // an ordinary global: after fork each process has its own

}  // namespace

int main() {
  using namespace std::chrono_literals;
  auto counters = tether::shared_new<Counters>();
  if (!counters) return failed(counters.error());
  Counters& c = **counters;
  std::vector<tether::Process> workers;
  for (int i = 0; i < 2; ++i) {
    auto worker = tether::fork([&c] {
      c.ready.fetch_add(1);
      while (c.ready.load() < 2) std::this_thread::yield();  // both start together
      for (long n = 0; n < kTimes; ++n) {
        // What `++counter` does, spelled out: a load, then a store. (An
        // atomic only so that the race is defined C++; the loss is the same.)
        long seen = c.unlocked.load(std::memory_order_relaxed);
        // Being preempted here, which a real ++ suffers now and then, lets
        // the other process change the counter under us. Here it happens
        // on purpose, every 64th time, so that a short run shows it too
        // (every time, on a machine busy with other work, took a minute).
        if (n % 64 == 0) std::this_thread::yield();
        c.unlocked.store(seen + 1, std::memory_order_relaxed);
      }
      for (long n = 0; n < kTimes; ++n) {
        auto guard = c.lock.lock();
        if (!guard) return failed(guard.error());
        ++c.locked;
        ++plain;
      }  // unlocked here, as each guard goes
      return plain == kTimes ? 0 : 2;
    });
    if (!worker) return failed(worker.error());
    workers.push_back(std::move(*worker));
  }
  for (auto& w : workers) {
    auto status = w.wait(60s);
    if (!status) return failed(status.error());
    if (!status->success()) {
      std::fprintf(stderr, "worker %s\n", status->describe().c_str());
      return 1;
    }
  }
  long lost = 2 * kTimes - c.unlocked.load();
  std::printf("with the lock: %ld\n", c.locked);
  std::printf("without the lock: %ld (lost updates: %s)\n", c.unlocked.load(),
              lost > 0 ? "yes" : "no");
  // Each worker counted to 100000 in its own copy; ours never moved.
  std::printf("plain global in the parent: %ld (processes do not share memory unless asked)\n",
              plain);
  return c.locked == 2 * kTimes && plain == 0 ? 0 : 1;
}
