// Queue benchmark: tether's shared-memory Queue next to a plain
// shared-memory ring doing the same work (fixed 64-byte slots, one flag
// each: the floor on this machine), in the same run, variants interleaved,
// the two processes pinned to CPU0 and CPU1.
//
//   bench_queue [--quick]
//
// Rows: round trip of a 64-byte message with the peer spinning (one-to-one
// queues, and the many-to-many path used one-to-one); throughput one way
// at 64 B, 4 KiB and 64 KiB, copying and zero-copy (loan/view, writing and
// reading only the first and last bytes: what the ring itself costs); put + get
// in one process.
#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "harness.hpp"
#include "tether/queue.hpp"

namespace {

bool quick = false;
auto [cpu_a, cpu_b] = bench::cpu_pair();

// ------------------------------------------------------------ the floor

struct alignas(64) RawSlot {
  std::atomic<std::uint64_t> seq;
  std::byte data[56];
};

// A single-producer single-consumer ring of 64-byte slots: slot i holds
// message n when seq == n + 1.
struct RawRing {
  static constexpr std::size_t kSlots = 1024;
  RawSlot slot[kSlots];
  void put(std::uint64_t n, const std::byte* data, std::size_t len) {
    // Only used for round trips: one message in flight, never a full ring.
    RawSlot& s = slot[n % kSlots];
    std::memcpy(s.data, data, std::min(len, sizeof s.data));
    s.seq.store(n + 1, std::memory_order_release);
  }
  void get(std::uint64_t n, std::byte* out, std::size_t len) {
    RawSlot& s = slot[n % kSlots];
    while (s.seq.load(std::memory_order_acquire) != n + 1) __builtin_ia32_pause();
    std::memcpy(out, s.data, std::min(len, sizeof s.data));
  }
};

RawRing* raw_pair[2];

void make_raw() {
  for (auto& r : raw_pair) {
    void* p =
        mmap(nullptr, sizeof(RawRing), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    r = new (p) RawRing();
  }
}

// ------------------------------------------------------------ round trips

int rounds() {
  return quick ? 2 : 6;
}
int trips() {
  return quick ? 2000 : 20000;
}

std::vector<double> raw_rtt() {
  static std::uint64_t base = 0;
  const int n = trips();
  std::uint64_t b = base;
  base += static_cast<std::uint64_t>(n);
  pid_t peer = bench::start_peer(cpu_b, [&] {
    std::byte buf[56];
    for (int i = 0; i < n; ++i) {
      raw_pair[0]->get(b + i, buf, 56);
      raw_pair[1]->put(b + i, buf, 56);
    }
    return 0;
  });
  std::byte msg[56] = {};
  std::vector<double> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    auto t0 = bench::clock::now();
    raw_pair[0]->put(b + i, msg, 56);
    raw_pair[1]->get(b + i, msg, 56);
    out.push_back(std::chrono::duration<double, std::nano>(bench::clock::now() - t0).count());
  }
  bench::join_peer(peer);
  return out;
}

std::vector<double> queue_rtt(tether::Queue& ping, tether::Queue& pong, std::size_t size) {
  const int n = trips();
  pid_t peer = bench::start_peer(cpu_b, [&] {
    std::vector<std::byte> buf(size);
    for (int i = 0; i < n; ++i) {
      if (!ping.get(std::span(buf))) return 1;
      if (!pong.put(std::span(buf))) return 1;
    }
    return 0;
  });
  std::vector<std::byte> msg(size);
  std::vector<double> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    auto t0 = bench::clock::now();
    if (!ping.put(std::span(msg)) || !pong.get(std::span(msg))) std::exit(1);
    out.push_back(std::chrono::duration<double, std::nano>(bench::clock::now() - t0).count());
  }
  bench::join_peer(peer);
  return out;
}

// Round trip by loan and view, touching the first and last bytes only: what
// zero-copy costs at `size` (it should not grow with it).
std::vector<double> loan_rtt(tether::Queue& ping, tether::Queue& pong, std::size_t size) {
  const int n = trips();
  auto hop = [size](tether::Queue& from, tether::Queue& to) {
    auto v = from.get_view();
    if (!v) return false;
    std::byte first = v->data()[0], last = v->data()[v->size() - 1];
    v->release();
    auto l = to.loan(size);
    if (!l) return false;
    l->data()[0] = first;
    l->data()[size - 1] = last;
    return l->commit().has_value();
  };
  pid_t peer = bench::start_peer(cpu_b, [&] {
    for (int i = 0; i < n; ++i)
      if (!hop(ping, pong)) return 1;
    return 0;
  });
  std::vector<double> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    auto t0 = bench::clock::now();
    auto l = ping.loan(size);
    if (!l) std::exit(1);
    l->data()[0] = std::byte{1};
    l->data()[size - 1] = std::byte{2};
    if (!l->commit()) std::exit(1);
    auto v = pong.get_view();
    if (!v) std::exit(1);
    out.push_back(std::chrono::duration<double, std::nano>(bench::clock::now() - t0).count());
  }
  bench::join_peer(peer);
  return out;
}

void print_rtt(const char* name, std::vector<double> v) {
  std::sort(v.begin(), v.end());
  double med = v[v.size() / 2], p99 = v[v.size() * 99 / 100], p999 = v[v.size() * 999 / 1000];
  fmt::print("  {:<44} median {:8.0f} ns  p99 {:8.0f} ns  p99.9 {:8.0f} ns  one-way {:6.0f} ns\n",
             name, med, p99, p999, med / 2);
}

// ------------------------------------------------------------ throughput

double queue_throughput(tether::Queue& q, std::size_t size, bool zero_copy) {
  const std::size_t total_bytes = quick ? (std::size_t{64} << 20) : (std::size_t{1} << 30);
  const std::size_t n = std::max<std::size_t>(total_bytes / size, 20000);
  pid_t peer = bench::start_peer(cpu_b, [&] {
    std::vector<std::byte> buf(size);
    for (std::size_t i = 0; i < n; ++i) {
      if (zero_copy) {
        auto v = q.get_view();
        if (!v) return 1;
        // Touch what was received, as a reader would.
        volatile std::byte sink = v->data()[v->size() - 1];
        (void)sink;
      } else if (!q.get(std::span(buf))) {
        return 1;
      }
    }
    return 0;
  });
  std::vector<std::byte> msg(size, std::byte{1});
  auto t0 = bench::clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    if (zero_copy) {
      auto l = q.loan(size);
      if (!l) std::exit(1);
      l->data()[0] = std::byte{1};
      l->data()[size - 1] = std::byte{2};
      if (!l->commit()) std::exit(1);
    } else if (!q.put(std::span(msg))) {
      std::exit(1);
    }
  }
  bench::join_peer(peer);
  double secs = bench::micros_since(t0) / 1e6;
  return static_cast<double>(n) / secs;
}

// ------------------------------------------------------------ Value, Dict

// ns per call of `body`, median of rounds of n calls.
template <class Body>
double per_call(int n, Body&& body) {
  std::vector<double> per;
  for (int r = 0; r < rounds(); ++r) {
    auto t0 = bench::clock::now();
    for (int i = 0; i < n; ++i) body(i);
    per.push_back(bench::micros_since(t0) * 1000 / n);
  }
  return bench::summarize(per).median;
}

void shared_data() {
  const int n = quick ? 100000 : 2000000;
  auto row = [](const char* what, double ns) { fmt::print("  {:<52} {:8.1f} ns\n", what, ns); };
  fmt::print("\nValue and Dict, one process (median of {} rounds)\n", rounds());
  auto mutex = *tether::shared_new<tether::Mutex>();
  long plain = 0;
  row("floor: tether Mutex lock, ++, unlock", per_call(n, [&](int) {
        auto g = mutex->lock();
        ++plain;
      }));
  auto v = *tether::Value<long>::anonymous(0);
  row("Value<long>: lock(), ++*get(), unlock", per_call(n, [&](int) {
        auto g = v.lock();
        ++*v.get();
      }));
  row("Value<long>: fetch_add(1), no lock", per_call(n, [&](int) { v.fetch_add(1); }));
  row("Value<long>: store() (locked, kill-safe)", per_call(n, [&](int i) { (void)v.store(i); }));
  row("Value<long>: load() (locked)", per_call(n, [&](int) { (void)v.load(); }));

  auto d = *tether::Dict::anonymous({.capacity = 4096});
  std::vector<std::string> keys;
  for (int i = 0; i < 1000; ++i) {
    keys.push_back(fmt::format("key-{:06}", i));
    (void)d.set_value(keys.back(), std::int64_t{i});
  }
  std::string into;
  row("Dict get, 10-byte key, 8-byte value (1,000 keys)", per_call(n, [&](int i) {
        (void)d.get_into(keys[static_cast<std::size_t>(i) % keys.size()], into);
      }));
  row("Dict get_value<int64_t>", per_call(n, [&](int i) {
        (void)d.get_value<std::int64_t>(keys[static_cast<std::size_t>(i) % keys.size()]);
      }));
  row("Dict contains, a missing key", per_call(n, [&](int) { (void)d.contains("missing"); }));
  row("Dict set, replacing an 8-byte value", per_call(n, [&](int i) {
        (void)d.set_value(keys[static_cast<std::size_t>(i) % keys.size()], std::int64_t{i});
      }));
  row("Dict update_value<int64_t> (++ under the lock)", per_call(n, [&](int i) {
        (void)d.update_value<std::int64_t>(keys[static_cast<std::size_t>(i) % keys.size()],
                                           [](std::int64_t& x) { ++x; });
      }));
  row("Dict set then erase of a new key", per_call(n / 4, [&](int) {
        (void)d.set_value("fresh-key", 1);
        (void)d.erase("fresh-key");
      }));
  // Readers do not wait for writers: gets while another process sets.
  std::atomic<int>* stop = *tether::shared_new<std::atomic<int>>(0);
  pid_t writer = bench::start_peer(cpu_b, [&] {
    std::int64_t x = 0;
    while (stop->load(std::memory_order_relaxed) == 0)
      (void)d.set_value(keys[static_cast<std::size_t>(x++ % 1000)], x);
    return 0;
  });
  row("Dict get while another process sets (other keys too)", per_call(n, [&](int i) {
        (void)d.get_into(keys[static_cast<std::size_t>(i * 7) % keys.size()], into);
      }));
  stop->store(1);
  bench::join_peer(writer);
  fmt::print("  (reads that raced a writer and looked again: {})\n", d.stats().read_retries);
}

}  // namespace

int main(int argc, char** argv) {
  quick = bench::quick_mode(argc, argv);
  fmt::print("bench_queue on {}{}\n", bench::machine_description(), quick ? " (quick)" : "");
  bench::pin(cpu_a);
  make_raw();
  auto one = [](std::size_t max, std::size_t ring) {
    return *tether::Queue::anonymous({.max_message = max,
                                      .capacity_bytes = ring,
                                      .producers = tether::Ends::one,
                                      .consumers = tether::Ends::one,
                                      .spin = 1u << 30});
  };
  auto many = [](std::size_t max, std::size_t ring) {
    return *tether::Queue::anonymous(
        {.max_message = max, .capacity_bytes = ring, .spin = 1u << 30});
  };

  fmt::print("\nround trip, 64 B, peer spinning ({} trips x {} rounds, interleaved)\n", trips(),
             rounds());
  {
    auto a1 = one(64, 1 << 16), b1 = one(64, 1 << 16);
    auto am = many(64, 1 << 16), bm = many(64, 1 << 16);
    auto all = bench::interleave(rounds(), {
                                               [&] { return raw_rtt(); },
                                               [&] { return queue_rtt(a1, b1, 64); },
                                               [&] { return queue_rtt(am, bm, 64); },
                                           });
    print_rtt("raw shared-memory ring (the floor)", all[0]);
    print_rtt("tether Queue, one to one", all[1]);
    print_rtt("tether Queue, many-to-many path", all[2]);
  }

  fmt::print(
      "\nround trip by loan and view (first and last bytes touched), one to one, "
      "peer spinning ({} trips x {} rounds, interleaved)\n",
      trips(), rounds());
  {
    const std::vector<std::size_t> sizes = {64, 4096, 65536, std::size_t{1} << 20,
                                            std::size_t{4} << 20};
    std::vector<tether::Queue> pings, pongs;
    std::vector<std::function<std::vector<double>()>> runs;
    for (std::size_t size : sizes) {
      // Room for a few messages in flight, rounded up by the queue.
      pings.push_back(one(size, 4 * size + 4096));
      pongs.push_back(one(size, 4 * size + 4096));
    }
    for (std::size_t k = 0; k < sizes.size(); ++k)
      runs.emplace_back([&, k] { return loan_rtt(pings[k], pongs[k], sizes[k]); });
    auto all = bench::interleave(rounds(), runs);
    for (std::size_t k = 0; k < sizes.size(); ++k)
      print_rtt(fmt::format("tether Queue, loan + view, {}", bench::size_name(sizes[k])).c_str(),
                all[k]);
  }

  fmt::print("\nthroughput, one way (best of {} runs)\n", rounds());
  for (std::size_t size : {std::size_t{64}, std::size_t{4096}, std::size_t{65536}}) {
    auto q1 = one(size, std::size_t{4} << 20);
    auto qm = many(size, std::size_t{4} << 20);
    double c1 = 0, z1 = 0, cm = 0;
    for (int r = 0; r < rounds(); ++r) {
      c1 = std::max(c1, queue_throughput(q1, size, false));
      z1 = std::max(z1, queue_throughput(q1, size, true));
      cm = std::max(cm, queue_throughput(qm, size, false));
    }
    auto row = [&](const char* what, double rate) {
      fmt::print("  {:<8} {:<34} {:10.2f} M msg/s  {:8.2f} GB/s\n", bench::size_name(size), what,
                 rate / 1e6, rate * static_cast<double>(size) / 1e9);
    };
    row("one to one, copying", c1);
    row("one to one, loan + view (2 B touched)", z1);
    row("many-to-many path, copying", cm);
  }

  fmt::print("\nput + get in one process, 64 B\n");
  {
    auto q = one(64, 1 << 16);
    std::byte msg[64] = {};
    const int n = quick ? 200000 : 5000000;
    std::vector<double> per;
    for (int r = 0; r < rounds(); ++r) {
      auto t0 = bench::clock::now();
      for (int i = 0; i < n; ++i) {
        if (!q.put(std::span(msg)) || !q.get(std::span(msg))) return 1;
      }
      per.push_back(bench::micros_since(t0) * 1000 / n);
    }
    auto s = bench::summarize(per);
    fmt::print("  {:<44} median {:8.1f} ns\n", "tether Queue put + get", s.median);
  }
  shared_data();
  fmt::print(
      "\nqueue memory: a ring of 1 MiB takes {} bytes (header and 64 participants' slots: {})\n",
      many(64, 1 << 20).memory_bytes(), many(64, 1 << 20).memory_bytes() - (1u << 20));
  return 0;
}
