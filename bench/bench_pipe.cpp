// Pipe round trip and throughput: tether's Pipe next to the raw read/write
// loop doing the same work, in the same run, peers pinned to different CPUs.
//
//   bench_pipe [--quick]
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "harness.hpp"
#include "tether/channel/pipe.hpp"

namespace {

bool quick = false;
auto [cpu_a, cpu_b] = bench::cpu_pair();

// ---------------------------------------------------------------- raw loops

// When set, the raw loop writes with pwritev2(RWF_NOSIGNAL), the syscall
// tether uses to avoid SIGPIPE: separates the syscall's cost from tether's.
bool raw_uses_pwritev2 = false;

bool raw_write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    iovec iov{const_cast<char*>(p), n};
    ssize_t w =
        raw_uses_pwritev2 ? pwritev2(fd, &iov, 1, -1, 0x100 /* RWF_NOSIGNAL */) : write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool raw_read_exact(int fd, char* p, std::size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// Round trips of `size` bytes; one sample (microseconds) per round trip.
std::vector<double> round_trip_raw(int iters, std::size_t size, bool pwritev2_writes = false) {
  raw_uses_pwritev2 = pwritev2_writes;
  int there[2], back[2];
  if (pipe2(there, O_CLOEXEC) || pipe2(back, O_CLOEXEC)) std::abort();
  pid_t peer = bench::start_peer(cpu_b, [&] {
    std::vector<char> buf(size);
    for (int i = 0; i < iters; ++i) {
      if (!raw_read_exact(there[0], buf.data(), size) ||
          !raw_write_all(back[1], buf.data(), size)) {
        return 1;
      }
    }
    return 0;
  });
  bench::pin(cpu_a);
  std::vector<char> buf(size, 'x');
  std::vector<double> samples;
  samples.reserve(iters);
  for (int i = 0; i < iters; ++i) {
    auto t0 = bench::clock::now();
    if (!raw_write_all(there[1], buf.data(), size) || !raw_read_exact(back[0], buf.data(), size))
      std::abort();
    samples.push_back(bench::micros_since(t0));
  }
  bench::join_peer(peer);
  for (int fd : {there[0], there[1], back[0], back[1]}) close(fd);
  raw_uses_pwritev2 = false;
  return samples;
}

std::vector<double> round_trip_tether(int iters, std::size_t size) {
  auto there = tether::Pipe::create().value();
  auto back = tether::Pipe::create().value();
  pid_t peer = bench::start_peer(cpu_b, [&] {
    std::vector<std::byte> buf(size);
    for (int i = 0; i < iters; ++i) {
      if (!there.reader.read_exact(buf) || !back.writer.write_all(buf)) return 1;
    }
    return 0;
  });
  bench::pin(cpu_a);
  std::vector<std::byte> buf(size, std::byte{'x'});
  std::vector<double> samples;
  samples.reserve(iters);
  for (int i = 0; i < iters; ++i) {
    auto t0 = bench::clock::now();
    if (!there.writer.write_all(buf) || !back.reader.read_exact(buf)) std::abort();
    samples.push_back(bench::micros_since(t0));
  }
  bench::join_peer(peer);
  return samples;
}

// One-way throughput: the peer writes `total` bytes in messages of `size`,
// we read them message by message. One sample: GB/s of the whole transfer.
std::vector<double> throughput_raw(std::size_t size, std::size_t total, std::size_t capacity,
                                   bool pwritev2_writes = false) {
  raw_uses_pwritev2 = pwritev2_writes;
  int p[2], gate[2];
  if (pipe2(p, O_CLOEXEC) || pipe2(gate, O_CLOEXEC)) std::abort();
  if (capacity) fcntl(p[1], F_SETPIPE_SZ, static_cast<int>(capacity));
  std::size_t count = total / size;
  pid_t peer = bench::start_peer(cpu_b, [&] {
    close(p[0]);
    char go;
    if (read(gate[0], &go, 1) != 1) return 1;
    std::vector<char> buf(size, 'y');
    for (std::size_t i = 0; i < count; ++i) {
      if (!raw_write_all(p[1], buf.data(), size)) return 1;
    }
    return 0;
  });
  close(p[1]);
  bench::pin(cpu_a);
  std::vector<char> buf(size);
  auto t0 = bench::clock::now();
  if (write(gate[1], "g", 1) != 1) std::abort();
  for (std::size_t i = 0; i < count; ++i) {
    if (!raw_read_exact(p[0], buf.data(), size)) std::abort();
  }
  double us = bench::micros_since(t0);
  bench::join_peer(peer);
  for (int fd : {p[0], gate[0], gate[1]}) close(fd);
  raw_uses_pwritev2 = false;
  return {static_cast<double>(count * size) / us / 1e3};
}

std::vector<double> throughput_tether(std::size_t size, std::size_t total, std::size_t capacity) {
  auto p = tether::Pipe::create().value();
  auto gate = tether::Pipe::create().value();
  if (capacity) (void)p.writer.set_capacity(capacity);
  std::size_t count = total / size;
  pid_t peer = bench::start_peer(cpu_b, [&] {
    (void)p.reader.close();
    std::byte go[1];
    if (!gate.reader.read_exact(go)) return 1;
    std::vector<std::byte> buf(size, std::byte{'y'});
    for (std::size_t i = 0; i < count; ++i) {
      if (!p.writer.write_all(buf)) return 1;
    }
    return 0;
  });
  (void)p.writer.close();
  bench::pin(cpu_a);
  std::vector<std::byte> buf(size);
  auto t0 = bench::clock::now();
  if (!gate.writer.write_all("g")) std::abort();
  for (std::size_t i = 0; i < count; ++i) {
    if (!p.reader.read_exact(buf)) std::abort();
  }
  double us = bench::micros_since(t0);
  bench::join_peer(peer);
  return {static_cast<double>(count * size) / us / 1e3};
}

}  // namespace

int main(int argc, char** argv) {
  quick = bench::quick_mode(argc, argv);
  fmt::print("# pipe benchmark ({})\n", bench::machine_description());
  fmt::print(
      "# peers pinned to CPU {} and CPU {}; variants interleaved; write without SIGPIPE: {}\n\n",
      cpu_a, cpu_b,
      tether::kernel_has_write_nosignal() ? "pwritev2(RWF_NOSIGNAL)" : "signal mask per write");

  // Round trip.
  int rounds = quick ? 1 : 5, iters = quick ? 200 : 4000;
  bool nosignal = tether::kernel_has_write_nosignal();
  auto rt = bench::interleave(rounds, {[&] { return round_trip_raw(iters, 64); },
                                       [&] { return round_trip_raw(iters, 64, nosignal); },
                                       [&] { return round_trip_tether(iters, 64); }});
  auto raw = bench::summarize(rt[0]), rawp = bench::summarize(rt[1]), tet = bench::summarize(rt[2]);
  fmt::print("## pipe round trip, 64 B ({} round trips each)\n\n", raw.n);
  fmt::print("| variant | median µs | p99 µs |\n|---|---:|---:|\n");
  fmt::print("| raw read/write | {:.2f} | {:.2f} |\n", raw.median, raw.p99);
  fmt::print("| raw read/pwritev2 | {:.2f} | {:.2f} |\n", rawp.median, rawp.p99);
  fmt::print("| tether Pipe | {:.2f} | {:.2f} |\n", tet.median, tet.p99);
  fmt::print("\ntether / raw write, median: {:.3f}; tether / raw pwritev2, median: {:.3f}\n\n",
             tet.median / raw.median, tet.median / rawp.median);

  // Throughput.
  fmt::print("## pipe one-way throughput (GB/s, median of {} runs each)\n\n", quick ? 1 : 7);
  fmt::print(
      "| message | pipe buffer | raw write | raw pwritev2 | tether | tether / raw write | tether / "
      "raw pwritev2 |\n"
      "|---|---|---:|---:|---:|---:|---:|\n");
  struct Case {
    std::size_t size, total, capacity;
  };
  std::vector<Case> cases = {
      {64, 8u << 20, 0},         {4096, 128u << 20, 0},         {65536, 256u << 20, 0},
      {1u << 20, 256u << 20, 0}, {65536, 256u << 20, 1u << 20}, {1u << 20, 256u << 20, 1u << 20}};
  for (auto c : cases) {
    std::size_t total = quick ? std::max(c.size * 16, c.total / 64) : c.total;
    auto runs = bench::interleave(
        quick ? 1 : 7, {[&] { return throughput_raw(c.size, total, c.capacity); },
                        [&] { return throughput_raw(c.size, total, c.capacity, nosignal); },
                        [&] { return throughput_tether(c.size, total, c.capacity); }});
    auto r = bench::summarize(runs[0]), rp = bench::summarize(runs[1]),
         t = bench::summarize(runs[2]);
    fmt::print("| {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.3f} | {:.3f} |\n",
               bench::size_name(c.size),
               c.capacity ? bench::size_name(c.capacity) : "64 KiB (default)", r.median, rp.median,
               t.median, t.median / r.median, t.median / rp.median);
  }

  // The opt-in: SIGPIPE ignored process-wide, tether writes with write(2).
  if (!tether::ignore_sigpipe()) return 1;
  fmt::print("\n## after tether::ignore_sigpipe(): plain write(2) (GB/s, median of {} runs)\n\n",
             quick ? 1 : 7);
  fmt::print("| message | raw write | tether | tether / raw |\n|---|---:|---:|---:|\n");
  for (std::size_t size : {std::size_t(64), std::size_t(4096)}) {
    std::size_t total = quick ? size * 1024 : (size == 64 ? 8u << 20 : 128u << 20);
    auto runs =
        bench::interleave(quick ? 1 : 7, {[&] { return throughput_raw(size, total, 0); },
                                          [&] { return throughput_tether(size, total, 0); }});
    auto r = bench::summarize(runs[0]), t = bench::summarize(runs[1]);
    fmt::print("| {} | {:.2f} | {:.2f} | {:.3f} |\n", bench::size_name(size), r.median, t.median,
               t.median / r.median);
  }
  return 0;
}
