// A lock whose holder is killed in the middle of an update. A robust mutex
// does not leave everyone else waiting forever: the next lock succeeds and
// says that the owner died, so the data can be repaired before it is used.
#include <chrono>
#include <csignal>
#include <cstdio>

#include <tether/tether.hpp>

namespace {

int failed(const tether::Error& e) {
  std::fprintf(stderr, "%s\n", e.message().c_str());
  return 1;
}

// Two fields that must agree: every update sets both, under the lock.
struct Record {
  tether::Mutex lock;
  int a = 0;
  int b = 0;
};

}  // namespace

int main() {
  using namespace std::chrono_literals;
  auto record = tether::shared_new<Record>();
  if (!record) return failed(record.error());
  Record& r = **record;

  auto holder = tether::fork([&r] {
    auto guard = r.lock.lock();
    if (!guard) return failed(guard.error());
    r.a = 1;           // half the update...
    ::raise(SIGKILL);  // ...and the holder dies, the lock held
    r.b = 1;           // never reached
    return 0;
  });
  if (!holder) return failed(holder.error());
  auto status = holder->wait(10s);
  if (!status) return failed(status.error());
  std::printf("holder %s\n", status->describe().c_str());

  {
    auto guard = r.lock.lock(5s);  // not a hang: the kernel freed it when the holder died
    if (!guard) return failed(guard.error());
    std::printf("previous holder died: %s\n", guard->owner_died() ? "yes" : "no");
    std::printf("found: a=%d b=%d\n", r.a, r.b);
    if (guard->owner_died()) {
      r.b = r.a;  // repair: finish the update it began
      // Without this, unlocking would leave the mutex not recoverable:
      // every later lock, in every process, fails.
      if (auto ok = guard->mark_consistent(); !ok) return failed(ok.error());
    }
    std::printf("repaired: a=%d b=%d\n", r.a, r.b);
  }

  // Another process takes it as an ordinary lock again.
  auto next = tether::fork([&r] {
    auto guard = r.lock.lock(5s);
    if (!guard) return failed(guard.error());
    std::printf("next lock: owner_died=%s\n", guard->owner_died() ? "yes" : "no");
    return guard->owner_died() ? 1 : 0;
  });
  if (!next) return failed(next.error());
  auto last = next->wait(10s);
  if (!last) return failed(last.error());
  return last->success() && r.a == 1 && r.b == 1 ? 0 : 1;
}
