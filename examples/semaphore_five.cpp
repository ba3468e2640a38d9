// Python's multiprocessing.Semaphore(3), shared by five processes: at most
// three are ever inside the guarded section at once, however many want in.
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

// Everything the processes share is in one struct in shared memory: an
// ordinary variable would be copied by fork, not shared.
struct Room {
  tether::Semaphore seats{3};
  tether::Event open;          // the children start together, once all exist
  std::atomic<int> inside{0};  // how many hold a seat now
  std::atomic<int> most{0};    // the most inside at once so far
  std::atomic<int> visits{0};
};

constexpr int kChildren = 5, kVisits = 3;

void raise_to(std::atomic<int>& most, int now) {
  int seen = most.load();
  while (now > seen && !most.compare_exchange_weak(seen, now)) {
  }
}

}  // namespace

int main() {
  using namespace std::chrono_literals;
  auto room = tether::shared_new<Room>();
  if (!room) return failed(room.error());
  Room& r = **room;
  std::vector<tether::Process> children;
  for (int i = 0; i < kChildren; ++i) {
    auto child = tether::fork([&r] {
      if (auto ok = r.open.wait(10s); !ok) return failed(ok.error());
      for (int v = 0; v < kVisits; ++v) {
        if (auto ok = r.seats.wait(10s); !ok) return failed(ok.error());
        raise_to(r.most, r.inside.fetch_add(1) + 1);
        r.visits.fetch_add(1);
        // Stay a while, so that the others pile up at the door and the
        // three seats are all taken at some moment.
        std::this_thread::sleep_for(20ms);
        r.inside.fetch_sub(1);
        if (auto ok = r.seats.post(); !ok) return failed(ok.error());
      }
      return 0;
    });
    if (!child) return failed(child.error());
    children.push_back(std::move(*child));
  }
  r.open.set();
  int code = 0;
  for (int i = 0; i < kChildren; ++i) {
    auto status = children[i].wait(30s);
    if (!status) return failed(status.error());
    std::printf("child %d %s\n", i + 1, status->describe().c_str());
    if (!status->success()) code = 1;
  }
  std::printf("%d visits, most inside at once: %d (limit 3)\n", r.visits.load(), r.most.load());
  if (r.most.load() > 3) code = 1;
  return code;
}
