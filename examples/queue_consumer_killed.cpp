// A consumer killed -9 in the middle of reading, and the queue carrying
// on. The victim reads a message in place (a View: the ring keeps the
// message's space for it) and dies holding it: the others find it dead,
// reclaim that space and go on with the rest; stats() says what happened.
// (The message was the victim's: get_view had returned it. A get killed
// before it returns gives its message back instead, for another get.)
#include <signal.h>

#include <cstdio>
#include <set>

#include <tether/tether.hpp>

int main() {
  using namespace std::chrono_literals;
  auto q = tether::Queue::anonymous({.max_message = 64});
  if (!q) {
    std::fprintf(stderr, "%s\n", q.error().message().c_str());
    return 1;
  }
  for (int i = 0; i < 5; ++i)
    if (!q->put_value(i)) return 1;
  // The victim takes a view of the first message (the ring holds it for
  // it) and is killed while holding it, before it could do anything else.
  auto victim = tether::fork([&] {
    auto v = q->get_view(5s);
    if (!v) return 2;
    ::raise(SIGKILL);
    return 3;
  });
  if (!victim) return 1;
  auto how = victim->wait();
  if (!how) return 1;
  std::printf("consumer killed by %s while holding a message\n",
              how->signal() == SIGKILL ? "SIGKILL" : "something else");
  std::set<int> got;
  for (int i = 0; i < 4; ++i) {
    auto v = q->get_value<int>(5s);
    if (!v) {
      std::fprintf(stderr, "%s\n", v.error().message().c_str());
      return 1;
    }
    got.insert(*v);
  }
  std::printf("the others got %zu messages: 1 to 4 %s\n", got.size(),
              got == std::set<int>{1, 2, 3, 4} ? "all there" : "NOT all there");
  // Its space comes back when a producer needs it, or now, on asking:
  auto found = q->recover();
  if (!found) return 1;
  std::printf("recover(): %u dead participant found\n", *found);
  auto s = q->stats();
  std::printf("stats: %llu dead participant, %llu view reclaimed, queue empty: %s\n",
              static_cast<unsigned long long>(s.dead_participants),
              static_cast<unsigned long long>(s.reclaimed_views), q->empty() ? "yes" : "no");
  if (!q->put_value(99)) return 1;
  std::printf("and it goes on: put and got %d\n", *q->get_value<int>(5s));
  return 0;
}
