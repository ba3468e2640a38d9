// Kill -9 at random instants in producers and consumers of a shared-memory
// queue (docs/queue.md), and check what the queue promises:
//   - no hang: every survivor keeps going, and the last consumer drains;
//   - nothing torn: every message received is whole (length and checksum);
//   - nothing duplicated: each sequence number arrives at most once;
//   - nothing committed lost: every message whose put returned arrives,
//     except one per killed consumer at most (the message its get had
//     returned when it died: delivered, to the dead);
//   - no leaked participant slot.
//
//   tether_stress_queue [--trials N] [--kills K] [--seed S]
//
// Each trial runs two producers and two consumers (many-to-many), or one of
// each (Ends::one), on a 16 KiB ring that wraps every few messages, with
// messages of 16 to 1,500 bytes, put by copy or by loan, taken by copy or
// as a view; K kills at random moments, each victim replaced at once.
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
#include <cstring>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tether/queue.hpp"

using namespace std::chrono_literals;

namespace {

constexpr std::int64_t kPerProducer = 1 << 20;  // sequence numbers of producer k: k << 20 ...
constexpr std::size_t kMaxSeen = 2 * kPerProducer;

struct Log {
  std::atomic<std::int64_t> last_put[2];  // the last sequence number whose put returned
  std::atomic<std::int64_t> next[2];      // where a (re)started producer begins
  std::atomic<std::uint32_t> stop;
  std::atomic<std::uint32_t> torn;
  std::atomic<std::uint32_t> errors;
  // What consumer c holds: the sequence number its last get returned, stored
  // the instant it returns (-1: nothing). A consumer killed holding one had
  // it delivered: it is the only message the queue may lose to a death.
  std::atomic<std::int64_t> holding[2];
  // 1 while consumer c is inside a get (until hold()): killed there, it may
  // have taken a message whose get never returned, once the copy is
  // released and before the return (a window no queue can close).
  std::atomic<std::uint32_t> in_get[2];
  std::atomic<std::uint64_t> delivered;  // gets that returned, all consumers
  std::atomic<std::uint8_t> seen[kMaxSeen];
};

Log* log_ = nullptr;
bool verbose = false;

std::uint32_t checksum(const std::byte* p, std::size_t n) {
  std::uint32_t h = 2166136261u;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint32_t>(p[i])) * 16777619u;
  return h;
}

// A message: seq (8 bytes), checksum of the rest (4), then bytes from seq.
std::size_t fill(std::byte* out, std::int64_t seq) {
  std::size_t n = 16 + static_cast<std::size_t>((seq * 2654435761u) % 1485);
  std::memcpy(out, &seq, 8);
  for (std::size_t i = 12; i < n; ++i)
    out[i] = static_cast<std::byte>(seq + static_cast<std::int64_t>(i));
  std::uint32_t c = checksum(out + 12, n - 12);
  std::memcpy(out + 8, &c, 4);
  return n;
}

void hold(int c, const std::byte* p, std::size_t n) {
  log_->delivered.fetch_add(1, std::memory_order_relaxed);
  std::int64_t seq = -1;
  if (n >= 8) std::memcpy(&seq, p, 8);
  log_->holding[c].store(seq);
  log_->in_get[c].store(0);
}

void check(const std::byte* p, std::size_t n) {
  std::int64_t seq = 0;
  std::uint32_t c = 0;
  if (n < 16) {
    log_->torn.fetch_add(1);
    return;
  }
  std::memcpy(&seq, p, 8);
  std::memcpy(&c, p + 8, 4);
  std::byte want[1500];
  if (seq < 0 || seq >= static_cast<std::int64_t>(kMaxSeen) || fill(want, seq) != n ||
      std::memcmp(want, p, n) != 0 || checksum(p + 12, n - 12) != c) {
    log_->torn.fetch_add(1);
    return;
  }
  log_->seen[seq].fetch_add(1);
}

int producer(tether::Queue& q, int k, unsigned seed) {
  std::mt19937 rng(seed);
  std::byte buf[1500];
  for (std::int64_t seq = log_->next[k].load();; ++seq) {
    if (log_->stop.load() != 0) return 0;
    std::size_t n = fill(buf, seq);
    bool done = false;
    while (!done) {
      if (log_->stop.load() != 0) return 0;
      if ((rng() & 1) != 0) {
        auto loan = q.loan(n, 500ms);
        if (!loan) {
          if (loan.error() == std::errc::timed_out) continue;
          std::fprintf(stderr, "producer: %s\n", loan.error().message().c_str());
          return 2;
        }
        std::memcpy(loan->data(), buf, n);
        if (!loan->commit()) return 3;
      } else {
        auto r = q.put(std::span(buf, n), 500ms);
        if (!r) {
          if (r.error() == std::errc::timed_out) continue;
          std::fprintf(stderr, "producer: %s\n", r.error().message().c_str());
          return 4;
        }
      }
      done = true;
    }
    log_->last_put[k].store(seq);
  }
}

int consumer(tether::Queue& q, int c, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> buf;
  for (;;) {
    log_->in_get[c].store(1);
    if ((rng() & 1) != 0) {
      auto v = q.get_view(500ms);
      if (!v) {
        if (v.error() == std::errc::timed_out) continue;
        if (v.error() == tether::errc::end_of_stream) return 0;
        std::fprintf(stderr, "consumer: %s\n", v.error().message().c_str());
        return 5;
      }
      hold(c, v->data(), v->size());
      check(v->data(), v->size());
    } else {
      auto r = q.get_into(buf, 500ms);
      if (!r) {
        if (r.error() == std::errc::timed_out) continue;
        if (r.error() == tether::errc::end_of_stream) return 0;
        std::fprintf(stderr, "consumer: %s\n", r.error().message().c_str());
        return 6;
      }
      hold(c, buf.data(), buf.size());
      check(buf.data(), buf.size());
    }
  }
}

pid_t start(const std::function<int()>& body) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  return pid;
}

// Waits for `pid` for at most `limit`; false (and kills it) if it hangs.
bool reap(pid_t pid, std::chrono::milliseconds limit, int* status) {
  auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid) return true;
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, status, 0);
      return false;
    }
    std::this_thread::sleep_for(1ms);
  }
}

struct Totals {
  std::uint64_t trials = 0, kills = 0, hangs = 0, torn = 0, dups = 0, lost = 0, allowed = 0,
                delivered = 0, leaked = 0, failures = 0, abandoned = 0, redelivered = 0,
                reclaimed = 0, in_flight = 0;
  std::vector<double> recovery_us;  // kill to the second delivery after it
};

void trial(std::mt19937& rng, int kills, Totals& t) {
  std::memset(static_cast<void*>(log_), 0, sizeof(Log));
  const bool many = (rng() & 1) != 0;
  const int np = many ? 2 : 1, nc = many ? 2 : 1;
  for (int k = 0; k < 2; ++k) {
    log_->holding[k] = -1;
    log_->last_put[k] = k * kPerProducer - 1;
    log_->next[k] = k * kPerProducer;
  }
  auto q = tether::Queue::anonymous({.max_message = 1500,
                                     .capacity_bytes = 16384,
                                     .producers = many ? tether::Ends::many : tether::Ends::one,
                                     .consumers = many ? tether::Ends::many : tether::Ends::one,
                                     .spin = 64});
  if (!q) {
    std::fprintf(stderr, "queue: %s\n", q.error().message().c_str());
    std::exit(1);
  }
  std::vector<pid_t> prod(np), cons(nc);
  for (int k = 0; k < np; ++k)
    prod[k] = start([&, k, s = static_cast<unsigned>(rng())] { return producer(*q, k, s); });
  for (int c = 0; c < nc; ++c)
    cons[c] = start([&, c, s = static_cast<unsigned>(rng())] { return consumer(*q, c, s); });
  std::set<std::int64_t> uncertain;         // a killed producer's put in flight: 0 or 1 arrival
  std::set<std::int64_t> consumed_by_dead;  // delivered to a consumer, then killed
  std::uint64_t gets_in_flight = 0;         // consumers killed inside a get
  int consumer_kills = 0;
  for (int i = 0; i < kills; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    int who = static_cast<int>(rng() % static_cast<unsigned>(np + nc));
    pid_t& victim = who < np ? prod[who] : cons[who - np];
    const std::uint64_t delivered_before = log_->delivered.load();
    const auto killed_at = std::chrono::steady_clock::now();
    ::kill(victim, SIGKILL);
    int st = 0;
    ::waitpid(victim, &st, 0);
    if (!WIFSIGNALED(st)) {
      std::fprintf(stderr, "a %s ended before it was killed (status %#x)\n",
                   who < np ? "producer" : "consumer", st);
      ++t.failures;
    }
    ++t.kills;
    if (who < np) {
      // It was putting the one after its last that returned, or its first
      // (a producer killed before any put returned): that one may or may
      // not have been committed.
      std::int64_t inflight = std::max(log_->last_put[who].load() + 1, log_->next[who].load());
      uncertain.insert(inflight);
      log_->next[who] = inflight + 1;
      victim = start([&, who, s = static_cast<unsigned>(rng())] { return producer(*q, who, s); });
    } else {
      ++consumer_kills;
      const int c = who - np;
      if (std::int64_t held = log_->holding[c].exchange(-1); held >= 0)
        consumed_by_dead.insert(held);
      if (log_->in_get[c].exchange(0) != 0) ++gets_in_flight;
      victim = start([&, c, s = static_cast<unsigned>(rng())] { return consumer(*q, c, s); });
    }
    // The others carry on (with the replacement, where the victim was the
    // only one of its side): the time until two more messages arrive.
    const auto give_up = killed_at + 10s;
    while (log_->delivered.load() < delivered_before + 2 &&
           std::chrono::steady_clock::now() < give_up)
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    if (log_->delivered.load() >= delivered_before + 2)
      t.recovery_us.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - killed_at)
              .count());
  }
  std::this_thread::sleep_for(2ms);
  log_->stop = 1;
  int st = 0;
  for (pid_t p : prod) {
    if (!reap(p, 20s, &st)) {
      ++t.hangs;
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "producer failed (status %#x)\n", st);
      ++t.failures;
    }
  }
  q->close();
  for (pid_t c : cons) {
    if (!reap(c, 20s, &st)) {
      ++t.hangs;
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "consumer failed (status %#x)\n", st);
      ++t.failures;
    }
  }
  // What the last consumers left (none: they drained), then the count.
  for (;;) {
    auto m = q->try_get();
    if (!m) break;
    check(m->data(), m->size());
  }
  (void)q->recover();
  std::uint64_t lost = 0;
  const std::uint64_t dups_before = t.dups;
  for (int k = 0; k < np; ++k) {
    for (std::int64_t s = k * kPerProducer; s <= log_->last_put[k].load(); ++s) {
      unsigned n = log_->seen[s].load();
      if (n > 1) {
        ++t.dups;
        std::fprintf(stderr, "trial %llu: message %lld arrived %u times (%s)\n",
                     static_cast<unsigned long long>(t.trials), static_cast<long long>(s), n,
                     many ? "many to many" : "one to one");
      }
      if (n >= 1) ++t.delivered;
      if (n == 0 && !uncertain.contains(s) && !consumed_by_dead.contains(s)) {
        ++lost;
        if (verbose)
          std::fprintf(stderr, "trial %llu: message %lld, committed, never arrived (%s)\n",
                       static_cast<unsigned long long>(t.trials), static_cast<long long>(s),
                       many ? "many to many" : "one to one");
      }
      if (n == 0 && consumed_by_dead.contains(s)) ++t.allowed;
    }
  }
  t.lost += lost;
  t.in_flight += gets_in_flight;
  if (lost > gets_in_flight) {
    std::fprintf(stderr,
                 "trial %llu: %llu committed messages lost, more than the %llu gets killed "
                 "in flight\n",
                 static_cast<unsigned long long>(t.trials), static_cast<unsigned long long>(lost),
                 static_cast<unsigned long long>(gets_in_flight));
    ++t.failures;
  }
  t.torn += log_->torn.load();
  auto stats = q->stats();
  if (t.dups != dups_before)
    std::fprintf(stderr,
                 "  that trial: %llu abandoned, %llu redelivered, %llu reclaimed, %llu dead, "
                 "%d consumers killed\n",
                 static_cast<unsigned long long>(stats.abandoned_writes),
                 static_cast<unsigned long long>(stats.redelivered),
                 static_cast<unsigned long long>(stats.reclaimed_views),
                 static_cast<unsigned long long>(stats.dead_participants), consumer_kills);
  t.abandoned += stats.abandoned_writes;
  t.redelivered += stats.redelivered;
  t.reclaimed += stats.reclaimed_views;
  // Every participant's place is free again but this process's own.
  std::vector<tether::Queue> others;
  for (int i = 0; i < 63; ++i) {
    auto o = q->another();
    if (!o) {
      ++t.leaked;
      break;
    }
    others.push_back(std::move(*o));
  }
  ++t.trials;
}

}  // namespace

int main(int argc, char** argv) {
  int trials = 100, kills = 4;
  unsigned seed = static_cast<unsigned>(std::random_device{}());
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--trials") trials = std::atoi(argv[i + 1]);
    if (a == "--kills") kills = std::atoi(argv[i + 1]);
    if (a == "--verbose") verbose = argv[i + 1][0] == '1';
    if (a == "--seed") seed = static_cast<unsigned>(std::strtoul(argv[i + 1], nullptr, 10));
  }
  void* mem =
      ::mmap(nullptr, sizeof(Log), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 1;
  log_ = static_cast<Log*>(mem);
  std::printf("stress_queue: %d trials, %d kills each, seed %u\n", trials, kills, seed);
  std::mt19937 rng(seed);
  Totals t;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < trials; ++i) trial(rng, kills, t);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "%llu trials, %llu kills in %.1f s: %llu messages delivered; hangs %llu, torn %llu, "
      "duplicated %llu, committed lost %llu (to %llu gets killed in flight; and %llu delivered to "
      "a consumer then killed), leaked "
      "slots %llu, "
      "failures %llu; the queues counted %llu abandoned writes, %llu redelivered, %llu views "
      "reclaimed\n",
      static_cast<unsigned long long>(t.trials), static_cast<unsigned long long>(t.kills), secs,
      static_cast<unsigned long long>(t.delivered), static_cast<unsigned long long>(t.hangs),
      static_cast<unsigned long long>(t.torn), static_cast<unsigned long long>(t.dups),
      static_cast<unsigned long long>(t.lost), static_cast<unsigned long long>(t.in_flight),
      static_cast<unsigned long long>(t.allowed), static_cast<unsigned long long>(t.leaked),
      static_cast<unsigned long long>(t.failures), static_cast<unsigned long long>(t.abandoned),
      static_cast<unsigned long long>(t.redelivered), static_cast<unsigned long long>(t.reclaimed));
  std::sort(t.recovery_us.begin(), t.recovery_us.end());
  auto pct = [&](double q) {
    return t.recovery_us.empty() ? 0.0
                                 : t.recovery_us[static_cast<std::size_t>(
                                       q * static_cast<double>(t.recovery_us.size() - 1))];
  };
  std::printf(
      "after a kill, two more messages delivered within: median %.0f us, p99 %.0f us, "
      "max %.0f us (%zu kills measured)\n",
      pct(0.5), pct(0.99), pct(1.0), t.recovery_us.size());
  bool ok = t.hangs == 0 && t.torn == 0 && t.dups == 0 && t.leaked == 0 && t.failures == 0;
  std::printf(ok ? "all trials passed\n" : "FAILED\n");
  return ok ? 0 : 1;
}
