// Queue against its peers: tether's shared-memory Queue next to
// Boost.Interprocess message_queue, ZeroMQ and NNG over ipc://, iceoryx 2.0
// publish/subscribe (with a RouDi daemon that this program starts and
// stops), and Python's multiprocessing (bench/peers/mp_bench.py), in the
// same run, variants interleaved (A B C A B C ...), the two ends pinned to
// CPU0 and CPU1.
//
//   bench_queue_peers [--quick]
//
// Rows: round trip of 64 bytes with the peer spinning (polling, never
// sleeping); round trip with the peer asleep in a blocking receive, beside a
// raw futex ping-pong (two words in shared memory, FUTEX_WAIT/FUTEX_WAKE:
// the floor for "peer asleep"); one-way throughput at 64 B and 4 KiB;
// multiprocessing's Queue, Value and Manager().dict() beside tether's.
// A peer that was not found at configure time (or cannot run here) prints
// "skipped: <why>"; that is never a failure.
//
// Every variant runs the same loops (rtt_measure, rtt_echo, tp_receive,
// tp_send) over a small adapter per library, in two children of this
// process: the measuring end on CPU0 sends its samples back through a
// pipe. This process never initialises ZeroMQ, NNG or iceoryx: NNG refuses
// to run in a child forked after its initialisation, and an iceoryx end must
// be a process of its own that registers with RouDi and unregisters when it
// returns from main, so iceoryx's ends are this program re-executed
// (--iceoryx-end).
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "harness.hpp"
#include "tether/queue.hpp"

#ifdef TETHER_BENCH_BOOST
#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/version.hpp>
#endif
#ifdef TETHER_BENCH_ZMQ
#include <zmq.h>
#endif
#ifdef TETHER_BENCH_NNG
#include <nng/nng.h>
#include <nng/protocol/pair0/pair.h>
#endif
#ifdef TETHER_BENCH_ICEORYX
#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/mepoo/chunk_header.hpp"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"
#include "iceoryx_versions.hpp"
#endif

namespace {

namespace fs = std::filesystem;

bool quick = false;
auto [cpu_a, cpu_b] = bench::cpu_pair();

int rounds() {
  return quick ? 2 : 5;
}
int spin_trips() {
  return quick ? 1000 : 20000;
}
int sleep_trips() {
  return quick ? 500 : 10000;
}
// Round trips made before the measured ones: connections set up, caches
// and pages warm.
int warmup() {
  return quick ? 50 : 500;
}
int tp_rounds() {
  return quick ? 1 : 3;
}
std::size_t tp_count(std::size_t size) {
  if (size <= 64) return quick ? 50000 : 1000000;
  return quick ? 5000 : 200000;
}
// A variant whose children have not finished by then is killed and fails.
constexpr std::chrono::seconds kVariantLimit{120};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_queue_peers: %s\n", what.c_str());
  std::exit(1);
}

// A pause for spinning loops (as tether's own, src/sync/futex.hpp).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

double nanos_since(bench::clock::time_point t0) {
  return std::chrono::duration<double, std::nano>(bench::clock::now() - t0).count();
}

bool write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool write_samples(int fd, const std::vector<double>& v) {
  return write_all(fd, v.data(), v.size() * sizeof(double));
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
  return fmt::format("status {:#x}", status);
}

std::string find_in_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

// A unique name for each object a variant makes: pid + counter.
[[maybe_unused]] std::string unique_tag() {
  static unsigned counter = 0;
  return fmt::format("{}-{}", ::getpid(), counter++);
}

// ---------------------------------------------------------------- children

// Forks a child pinned to `cpu` that runs `body` and exits with its result.
// The kernel kills the child if this process dies first (PR_SET_PDEATHSIG),
// so that a benchmark killed by its test's timeout leaves no spinning child.
pid_t fork_child(int cpu, const std::function<int()>& body) {
  std::fflush(nullptr);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) die(fmt::format("fork: {}", std::strerror(errno)));
  if (pid == 0) {
    (void)::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) _exit(111);  // the parent died before prctl
    bench::pin(cpu);
    _exit(body());
  }
  return pid;
}

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

struct Outcome {
  std::vector<double> samples;
  std::string error;  // empty: the variant ran
};

// Runs `peer` in a child on CPU1 and `measure` in a child on CPU0, which
// writes its samples (doubles) to the descriptor it is given; returns them
// once both children have exited 0. A child that fails, or a variant still
// running after kVariantLimit, has both children killed: a spinning end
// never waits forever for one that died. Waits on pidfds, not by waking up
// periodically, so that this process (on CPU0 too) stays asleep.
Outcome in_children(const std::function<int(int)>& measure, const std::function<int()>& peer) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) die("pipe2");
  pid_t kids[2];
  kids[1] = fork_child(cpu_b, [&] {
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return peer();
  });
  kids[0] = fork_child(cpu_a, [&] {
    ::close(pipe_fds[0]);
    return measure(pipe_fds[1]);
  });
  ::close(pipe_fds[1]);
  int pidfd[2] = {pidfd_open(kids[0]), pidfd_open(kids[1])};
  if (pidfd[0] < 0 || pidfd[1] < 0) die(fmt::format("pidfd_open: {}", std::strerror(errno)));

  Outcome out;
  std::string bytes;
  bool eof = false, done[2] = {false, false};
  const auto deadline = bench::clock::now() + kVariantLimit;
  const char* role[2] = {"measuring end", "peer end"};
  auto kill_all = [&] {
    for (int i = 0; i < 2; ++i)
      if (!done[i]) ::kill(kids[i], SIGKILL);
  };
  while (!eof || !done[0] || !done[1]) {
    pollfd p[3] = {{eof ? -1 : pipe_fds[0], POLLIN, 0},
                   {done[0] ? -1 : pidfd[0], POLLIN, 0},
                   {done[1] ? -1 : pidfd[1], POLLIN, 0}};
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - bench::clock::now());
    int ready = ::poll(p, 3, static_cast<int>(std::max<long>(left.count(), 0)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0 && out.error.empty()) {
      out.error = fmt::format("still running after {} s: killed", kVariantLimit.count());
      kill_all();
    }
    if (p[0].revents != 0) {
      char buf[1 << 16];
      ssize_t n = ::read(pipe_fds[0], buf, sizeof buf);
      if (n > 0) {
        bytes.append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        eof = true;
      }
    }
    for (int i = 0; i < 2; ++i) {
      if (done[i] || p[i + 1].revents == 0) continue;
      int status = 0;
      if (::waitpid(kids[i], &status, 0) != kids[i]) die("waitpid");
      done[i] = true;
      if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) && out.error.empty()) {
        out.error = fmt::format("{} {}", role[i], describe_status(status));
        kill_all();
      }
    }
  }
  ::close(pipe_fds[0]);
  ::close(pidfd[0]);
  ::close(pidfd[1]);
  if (out.error.empty()) {
    out.samples.resize(bytes.size() / sizeof(double));
    std::memcpy(out.samples.data(), bytes.data(), out.samples.size() * sizeof(double));
  }
  return out;
}

// ---------------------------------------------------------------- the loops

// What every adapter provides:
//   bool send(const std::byte*, std::size_t)       one whole message
//   bool recv(std::byte*, std::size_t, bool spin)  one message of exactly n bytes
// and the zero-copy ones also send_in_place(n) / recv_in_place(n), which
// write and read only the first and last bytes.

template <class Link>
int rtt_measure(Link& link, int trips, int warm, bool spin, int out_fd) {
  std::byte msg[64] = {};
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(trips));
  for (int i = 0; i < warm + trips; ++i) {
    auto t0 = bench::clock::now();
    if (!link.send(msg, sizeof msg) || !link.recv(msg, sizeof msg, spin)) return 10;
    if (i >= warm) samples.push_back(nanos_since(t0));
  }
  // A last message says the peer may go: a peer that closed its end right
  // after its last reply could lose it (NNG drops what a closed socket had
  // queued).
  if (!link.send(msg, sizeof msg)) return 11;
  return write_samples(out_fd, samples) ? 0 : 12;
}

template <class Link>
int rtt_echo(Link& link, int trips, int warm, bool spin) {
  std::byte buf[64];
  for (int i = 0; i < warm + trips; ++i) {
    if (!link.recv(buf, sizeof buf, spin) || !link.send(buf, sizeof buf)) return 20;
  }
  return link.recv(buf, sizeof buf, spin) ? 0 : 21;
}

// The receiving end measures: from the first message (sent before the
// clock starts: the connection is up and the sender running) to the last.
template <class Link>
int tp_receive(Link& link, std::size_t size, std::size_t count, bool in_place, int out_fd) {
  std::vector<std::byte> buf(size);
  auto one = [&] {
    if constexpr (requires { link.recv_in_place(size); }) {
      if (in_place) return link.recv_in_place(size);
    }
    return link.recv(buf.data(), size, false);
  };
  if (!one()) return 10;
  auto t0 = bench::clock::now();
  for (std::size_t i = 0; i < count; ++i) {
    if (!one()) return 11;
  }
  double secs = bench::micros_since(t0) / 1e6;
  std::byte ack{1};
  if (!link.send(&ack, 1)) return 12;  // the sender may close now
  return write_samples(out_fd, {static_cast<double>(count) / secs}) ? 0 : 13;
}

template <class Link>
int tp_send(Link& link, std::size_t size, std::size_t count, bool in_place) {
  std::vector<std::byte> msg(size, std::byte{1});
  for (std::size_t i = 0; i < count + 1; ++i) {
    bool ok = false;
    if constexpr (requires { link.send_in_place(size); }) {
      ok = in_place ? link.send_in_place(size) : link.send(msg.data(), size);
    } else {
      ok = link.send(msg.data(), size);
    }
    if (!ok) return 20;
  }
  std::byte ack;
  return link.recv(&ack, 1, false) ? 0 : 21;
}

// One variant of a table: a name, and how to run one round of it.
struct Variant {
  std::string name;
  std::function<Outcome()> run;
};

struct Gathered {
  std::string name;
  std::vector<double> samples;
  std::string error;
};

// Runs the variants `n` times in turn, A B C A B C ...; a variant that fails
// once is not run again (its error is kept).
std::vector<Gathered> interleave(int n, const std::vector<Variant>& variants) {
  std::vector<Gathered> all(variants.size());
  for (std::size_t v = 0; v < variants.size(); ++v) all[v].name = variants[v].name;
  for (int r = 0; r < n; ++r) {
    for (std::size_t v = 0; v < variants.size(); ++v) {
      if (!all[v].error.empty()) continue;
      auto o = variants[v].run();
      if (!o.error.empty()) {
        all[v].error = o.error;
        continue;
      }
      all[v].samples.insert(all[v].samples.end(), o.samples.begin(), o.samples.end());
    }
  }
  return all;
}

void print_skip(std::string_view name, std::string_view why) {
  fmt::print("  {:<48} skipped: {}\n", name, why);
}

void print_rtt(std::string_view name, std::vector<double> v) {
  std::sort(v.begin(), v.end());
  double med = v[v.size() / 2], p99 = v[v.size() * 99 / 100], p999 = v[v.size() * 999 / 1000];
  fmt::print("  {:<48} median {:8.0f} ns  p99 {:8.0f} ns  p99.9 {:8.0f} ns  one-way {:7.0f} ns\n",
             name, med, p99, p999, med / 2);
}

void print_rtts(const std::vector<Gathered>& all) {
  for (const auto& g : all) {
    if (!g.error.empty()) {
      fmt::print("  {:<48} FAILED: {}\n", g.name, g.error);
    } else if (g.samples.empty()) {
      fmt::print("  {:<48} FAILED: no samples\n", g.name);
    } else {
      print_rtt(g.name, g.samples);
    }
  }
}

// ---------------------------------------------------------------- tether

tether::Queue make_queue(std::size_t max_message, std::size_t ring, unsigned spin) {
  auto q = tether::Queue::anonymous({.max_message = max_message,
                                     .capacity_bytes = ring,
                                     .producers = tether::Ends::one,
                                     .consumers = tether::Ends::one,
                                     .spin = spin});
  if (!q) die(fmt::format("Queue::anonymous: {}", q.error().message()));
  return std::move(*q);
}

// The queue's spin option decides whether a get spins or sleeps.
struct TetherLink {
  tether::Queue* out;
  tether::Queue* in;
  bool send(const std::byte* p, std::size_t n) { return out->put(std::span(p, n)).has_value(); }
  bool recv(std::byte* p, std::size_t n, bool) {
    auto got = in->get(std::span(p, n));
    return got && *got == n;
  }
  bool send_in_place(std::size_t n) {
    auto loan = out->loan(n);
    if (!loan) return false;
    loan->data()[0] = std::byte{1};
    loan->data()[n - 1] = std::byte{2};
    return loan->commit().has_value();
  }
  bool recv_in_place(std::size_t n) {
    auto view = in->get_view();
    if (!view || view->size() != n) return false;
    volatile std::byte sink = view->data()[n - 1];  // touched, as a reader would
    (void)sink;
    return true;
  }
};

// Two one-to-one queues, a to b and b to a.
struct TetherPair {
  tether::Queue a2b, b2a;
  TetherPair(std::size_t max_message, std::size_t ring, unsigned spin)
      : a2b(make_queue(max_message, ring, spin)), b2a(make_queue(max_message, ring, spin)) {}
  TetherLink a() { return {&a2b, &b2a}; }
  TetherLink b() { return {&b2a, &a2b}; }
};

Outcome tether_rtt(TetherPair& q, int trips) {
  return in_children(
      [&](int fd) {
        auto l = q.a();
        return rtt_measure(l, trips, warmup(), true, fd);
      },
      [&] {
        auto l = q.b();
        return rtt_echo(l, trips, warmup(), true);
      });
}

Outcome tether_tp(TetherPair& q, std::size_t size, bool in_place) {
  const std::size_t n = tp_count(size);
  return in_children(
      [&](int fd) {
        auto l = q.a();
        return tp_receive(l, size, n, in_place, fd);
      },
      [&] {
        auto l = q.b();
        return tp_send(l, size, n, in_place);
      });
}

// ---------------------------------------------------------------- the futex floor

long futex(std::atomic<std::uint32_t>* word, int op, std::uint32_t value) {
  // Not FUTEX_PRIVATE_FLAG: the word is in memory shared by two processes.
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, value, nullptr, nullptr,
                   0);
}

// A binary semaphore on one futex word: 0 empty, 1 posted, 2 empty with a
// sleeper. A post makes a system call only for a sleeper (FUTEX_WAKE), a
// wait only to sleep (FUTEX_WAIT): what any sleeping wait and wake-up cost
// at least, with no data moved.
struct alignas(64) FutexWord {
  std::atomic<std::uint32_t> word{0};
  void post() {
    if (word.exchange(1, std::memory_order_release) == 2) futex(&word, FUTEX_WAKE, 1);
  }
  void wait() {
    for (;;) {
      std::uint32_t v = word.load(std::memory_order_acquire);
      if (v == 1) {
        if (word.compare_exchange_strong(v, 0, std::memory_order_acquire)) return;
        continue;
      }
      if (v == 0 && !word.compare_exchange_strong(v, 2)) continue;
      futex(&word, FUTEX_WAIT, 2);
    }
  }
};

struct FutexLink {
  FutexWord* out;
  FutexWord* in;
  bool send(const std::byte*, std::size_t) {
    out->post();
    return true;
  }
  bool recv(std::byte*, std::size_t, bool) {
    in->wait();
    return true;
  }
};

Outcome futex_rtt(int trips) {
  void* mem = ::mmap(nullptr, 2 * sizeof(FutexWord), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  auto* w = new (mem) FutexWord[2];
  auto o = in_children(
      [&](int fd) {
        FutexLink l{&w[0], &w[1]};
        return rtt_measure(l, trips, warmup(), false, fd);
      },
      [&] {
        FutexLink l{&w[1], &w[0]};
        return rtt_echo(l, trips, warmup(), false);
      });
  ::munmap(mem, 2 * sizeof(FutexWord));
  return o;
}

// ---------------------------------------------------------------- Boost.Interprocess

#ifdef TETHER_BENCH_BOOST
namespace bip = boost::interprocess;

// spin: try_receive until a message is there; else receive() (asleep on
// the queue's process-shared condition variable). A receive needs room for
// the queue's largest message: a smaller one (the 1-byte acknowledgement)
// goes through `spare`.
struct BoostLink {
  bip::message_queue* out;
  bip::message_queue* in;
  std::vector<std::byte> spare = {};
  bool send(const std::byte* p, std::size_t n) {
    try {
      out->send(p, n, 0);
      return true;
    } catch (const bip::interprocess_exception&) {
      return false;
    }
  }
  bool recv(std::byte* p, std::size_t n, bool spin) {
    try {
      bip::message_queue::size_type got = 0;
      unsigned prio = 0;
      const std::size_t room = in->get_max_msg_size();
      std::byte* into = p;
      if (n < room) {
        spare.resize(room);
        into = spare.data();
      }
      if (spin) {
        while (!in->try_receive(into, room, got, prio)) cpu_relax();
      } else {
        in->receive(into, room, got, prio);
      }
      if (got != n) return false;
      if (into != p) std::memcpy(p, into, n);
      return true;
    } catch (const bip::interprocess_exception&) {
      return false;
    }
  }
};

// Two named queues (in /dev/shm: message_queue has no anonymous form),
// removed when this goes.
struct BoostPair {
  std::string name_a2b, name_b2a;
  std::optional<bip::message_queue> a2b, b2a;
  BoostPair(std::size_t max_message, std::size_t messages) {
    std::string tag = unique_tag();
    name_a2b = "tether-bench-peers-" + tag + "-a2b";
    name_b2a = "tether-bench-peers-" + tag + "-b2a";
    a2b.emplace(bip::create_only, name_a2b.c_str(), messages, max_message);
    b2a.emplace(bip::create_only, name_b2a.c_str(), messages, max_message);
  }
  BoostPair(const BoostPair&) = delete;
  BoostPair& operator=(const BoostPair&) = delete;
  ~BoostPair() {
    a2b.reset();
    b2a.reset();
    bip::message_queue::remove(name_a2b.c_str());
    bip::message_queue::remove(name_b2a.c_str());
  }
  BoostLink a() { return {&*a2b, &*b2a}; }
  BoostLink b() { return {&*b2a, &*a2b}; }
};

Outcome boost_rtt(BoostPair& q, int trips, bool spin) {
  return in_children(
      [&](int fd) {
        auto l = q.a();
        return rtt_measure(l, trips, warmup(), spin, fd);
      },
      [&] {
        auto l = q.b();
        return rtt_echo(l, trips, warmup(), spin);
      });
}

Outcome boost_tp(std::size_t size) {
  // As many messages as fill tether's 4 MiB ring.
  BoostPair q(size, (std::size_t{4} << 20) / size);
  const std::size_t n = tp_count(size);
  return in_children(
      [&](int fd) {
        auto l = q.a();
        return tp_receive(l, size, n, false, fd);
      },
      [&] {
        auto l = q.b();
        return tp_send(l, size, n, false);
      });
}
#endif

// ---------------------------------------------------------------- ZeroMQ, NNG

// The directory for socket files, RouDi's configuration and log: made once,
// removed at exit.
std::string scratch_dir() {
  static std::string dir = [] {
    char tmpl[] = "/tmp/tether-bench-peers-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) die(fmt::format("mkdtemp: {}", std::strerror(errno)));
    return std::string(tmpl);
  }();
  return dir;
}

#ifdef TETHER_BENCH_ZMQ
// A PAIR socket; b binds, a connects. spin: ZMQ_DONTWAIT until a message is
// there; else a blocking zmq_recv.
struct ZmqLink {
  void* ctx = nullptr;
  void* sock = nullptr;
  bool ok = false;
  ZmqLink(const std::string& endpoint, bool bind) {
    ctx = zmq_ctx_new();
    sock = ctx ? zmq_socket(ctx, ZMQ_PAIR) : nullptr;
    if (sock)
      ok = (bind ? zmq_bind(sock, endpoint.c_str()) : zmq_connect(sock, endpoint.c_str())) == 0;
  }
  ZmqLink(const ZmqLink&) = delete;
  ZmqLink& operator=(const ZmqLink&) = delete;
  ~ZmqLink() {
    if (sock) zmq_close(sock);
    if (ctx) zmq_ctx_term(ctx);
  }
  bool send(const std::byte* p, std::size_t n) {
    for (;;) {
      int r = zmq_send(sock, p, n, 0);
      if (r >= 0) return static_cast<std::size_t>(r) == n;
      if (errno != EINTR) return false;
    }
  }
  bool recv(std::byte* p, std::size_t n, bool spin) {
    for (;;) {
      int r = zmq_recv(sock, p, n, spin ? ZMQ_DONTWAIT : 0);
      if (r >= 0) return static_cast<std::size_t>(r) == n;
      if (errno == EAGAIN) {
        cpu_relax();
      } else if (errno != EINTR) {
        return false;
      }
    }
  }
};

std::string zmq_endpoint() {
  return fmt::format("ipc://{}/zmq-{}", scratch_dir(), unique_tag());
}

Outcome zmq_rtt(int trips, bool spin) {
  std::string ep = zmq_endpoint();
  auto o = in_children(
      [&](int fd) {
        ZmqLink l(ep, false);
        return l.ok ? rtt_measure(l, trips, warmup(), spin, fd) : 30;
      },
      [&] {
        ZmqLink l(ep, true);
        return l.ok ? rtt_echo(l, trips, warmup(), spin) : 31;
      });
  ::unlink(ep.substr(6).c_str());
  return o;
}

Outcome zmq_tp(std::size_t size) {
  std::string ep = zmq_endpoint();
  const std::size_t n = tp_count(size);
  auto o = in_children(
      [&](int fd) {
        ZmqLink l(ep, false);
        return l.ok ? tp_receive(l, size, n, false, fd) : 30;
      },
      [&] {
        ZmqLink l(ep, true);
        return l.ok ? tp_send(l, size, n, false) : 31;
      });
  ::unlink(ep.substr(6).c_str());
  return o;
}
#endif

#ifdef TETHER_BENCH_NNG
// A pair0 socket; b listens, a dials (in the background, retrying until b
// listens). Send and receive buffers of 1000 messages, ZeroMQ's default
// high-water mark. spin: NNG_FLAG_NONBLOCK until a message is there.
struct NngLink {
  nng_socket sock = NNG_SOCKET_INITIALIZER;
  bool ok = false;
  NngLink(const std::string& url, bool listen) {
    if (nng_pair0_open(&sock) != 0) return;
    (void)nng_socket_set_int(sock, NNG_OPT_SENDBUF, 1000);
    (void)nng_socket_set_int(sock, NNG_OPT_RECVBUF, 1000);
    ok = (listen ? nng_listen(sock, url.c_str(), nullptr, 0)
                 : nng_dial(sock, url.c_str(), nullptr, NNG_FLAG_NONBLOCK)) == 0;
  }
  NngLink(const NngLink&) = delete;
  NngLink& operator=(const NngLink&) = delete;
  ~NngLink() {
    if (nng_socket_id(sock) > 0) nng_close(sock);
  }
  bool send(const std::byte* p, std::size_t n) {
    // nng_send takes a non-const pointer but only reads (NNG_FLAG_ALLOC unset).
    return nng_send(sock, const_cast<std::byte*>(p), n, 0) == 0;
  }
  bool recv(std::byte* p, std::size_t n, bool spin) {
    for (;;) {
      std::size_t got = n;
      int r = nng_recv(sock, p, &got, spin ? NNG_FLAG_NONBLOCK : 0);
      if (r == 0) return got == n;
      if (r != NNG_EAGAIN) return false;
      cpu_relax();
    }
  }
};

std::string nng_url() {
  return fmt::format("ipc://{}/nng-{}", scratch_dir(), unique_tag());
}

Outcome nng_rtt(int trips, bool spin) {
  std::string url = nng_url();
  auto o = in_children(
      [&](int fd) {
        NngLink l(url, false);
        return l.ok ? rtt_measure(l, trips, warmup(), spin, fd) : 30;
      },
      [&] {
        NngLink l(url, true);
        return l.ok ? rtt_echo(l, trips, warmup(), spin) : 31;
      });
  ::unlink(url.substr(6).c_str());
  return o;
}

Outcome nng_tp(std::size_t size) {
  std::string url = nng_url();
  const std::size_t n = tp_count(size);
  auto o = in_children(
      [&](int fd) {
        NngLink l(url, false);
        return l.ok ? tp_receive(l, size, n, false, fd) : 30;
      },
      [&] {
        NngLink l(url, true);
        return l.ok ? tp_send(l, size, n, false) : 31;
      });
  ::unlink(url.substr(6).c_str());
  return o;
}
#endif

// ---------------------------------------------------------------- iceoryx

#ifdef TETHER_BENCH_ICEORYX
// Untyped publisher and subscriber: send loans a chunk, copies the message
// in and publishes; recv polls take() (spinning: iceoryx has no blocking
// take; waking needs a WaitSet), copies out and releases.
struct IoxLink {
  iox::popo::UntypedPublisher* out;
  iox::popo::UntypedSubscriber* in;
  bool send(const std::byte* p, std::size_t n) {
    auto chunk = out->loan(static_cast<std::uint32_t>(n));
    if (chunk.has_error()) return false;
    std::memcpy(chunk.value(), p, n);
    out->publish(chunk.value());
    return true;
  }
  // Waits for the next chunk; its payload and size.
  const void* take(std::uint32_t& size) {
    for (;;) {
      auto got = in->take();
      if (!got.has_error()) {
        size = iox::mepoo::ChunkHeader::fromUserPayload(got.value())->userPayloadSize();
        return got.value();
      }
      if (got.get_error() != iox::popo::ChunkReceiveResult::NO_CHUNK_AVAILABLE) return nullptr;
      cpu_relax();
    }
  }
  bool recv(std::byte* p, std::size_t n, bool) {
    std::uint32_t size = 0;
    const void* payload = take(size);
    if (payload == nullptr) return false;
    std::memcpy(p, payload, std::min<std::size_t>(n, size));
    in->release(payload);
    return size == n;
  }
  bool send_in_place(std::size_t n) {
    auto chunk = out->loan(static_cast<std::uint32_t>(n));
    if (chunk.has_error()) return false;
    auto* bytes = static_cast<std::byte*>(chunk.value());
    bytes[0] = std::byte{1};
    bytes[n - 1] = std::byte{2};
    out->publish(chunk.value());
    return true;
  }
  bool recv_in_place(std::size_t n) {
    std::uint32_t size = 0;
    const void* payload = take(size);
    if (payload == nullptr) return false;
    volatile std::byte sink = static_cast<const std::byte*>(payload)[size - 1];
    (void)sink;
    in->release(payload);
    return size == n;
  }
};

// One iceoryx end, in a process of its own (this program re-executed):
//   --iceoryx-end MODE SIDE TAG SIZE COUNT WARMUP FD
// MODE rtt, tp (copying) or tpz (in place); SIDE a (measures, writes to FD)
// or b. Topics "tether-bench"/TAG/"a2b" and "b2a". The throughput modes
// lose nothing: the publisher waits for a full subscriber queue.
int iceoryx_end(int argc, char** argv) {
  if (argc != 9) return 40;
  const std::string mode = argv[2], side = argv[3], tag = argv[4];
  const std::size_t size = std::strtoull(argv[5], nullptr, 10);
  const std::size_t count = std::strtoull(argv[6], nullptr, 10);
  const int warm = std::atoi(argv[7]), fd = std::atoi(argv[8]);
  const bool a = side == "a";
  const std::string name = fmt::format("tether-bench-{}-{}", tag, side);
  // Warnings and errors only: the library's default is every debug line.
  iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn,
                                                           iox::log::LogLevelOutput::kHideLogLevel);
  iox::runtime::PoshRuntime::initRuntime(
      iox::RuntimeName_t(iox::cxx::TruncateToCapacity, name.c_str(), name.size()));

  iox::popo::PublisherOptions pub_options;
  iox::popo::SubscriberOptions sub_options;
  if (mode != "rtt") {
    pub_options.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
    sub_options.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
  }
  auto topic = [&](const char* event) {
    return iox::capro::ServiceDescription(
        "tether-bench",
        iox::capro::IdString_t(iox::cxx::TruncateToCapacity, tag.c_str(), tag.size()),
        iox::capro::IdString_t(iox::cxx::TruncateToCapacity, event));
  };
  iox::popo::UntypedPublisher pub(topic(a ? "a2b" : "b2a"), pub_options);
  iox::popo::UntypedSubscriber sub(topic(a ? "b2a" : "a2b"), sub_options);
  // Connections are made by RouDi, asynchronously: wait until this end's
  // publisher has the other's subscriber and this subscriber its publisher.
  const auto until = bench::clock::now() + std::chrono::seconds(20);
  while (!pub.hasSubscribers() || sub.getSubscriptionState() != iox::SubscribeState::SUBSCRIBED) {
    if (bench::clock::now() > until) return 41;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  IoxLink link{&pub, &sub};
  const int trips = static_cast<int>(count);
  if (mode == "rtt") {
    return a ? rtt_measure(link, trips, warm, true, fd) : rtt_echo(link, trips, warm, true);
  }
  const bool in_place = mode == "tpz";
  return a ? tp_receive(link, size, count, in_place, fd) : tp_send(link, size, count, in_place);
}

// Where iceoryx 2.0 puts its named objects (iceoryx_hoofs/platform/
// platform_settings.hpp: IOX_UDS_SOCKET_PATH_PREFIX, IOX_LOCK_FILE_PATH_PREFIX;
// iceoryx_posh_types.hpp: ROUDI_LOCK_NAME), all fixed: one RouDi per machine.
constexpr const char* kRoudiLock = "/tmp/iox-unique-roudi.lock";
constexpr const char* kRoudiSocket = "/tmp/roudi";
constexpr const char* kRoudiSocketLock = "/tmp/roudi.lock";
constexpr const char* kRoudiManagement = "/dev/shm/iceoryx_mgmt";

// The payload segment is named after the user.
std::string roudi_payload_segment() {
  const passwd* pw = ::getpwuid(::geteuid());
  return std::string("/dev/shm/") + (pw ? pw->pw_name : "unknown");
}

// The daemon, started by this program and stopped by it. Nothing is
// removed that this program did not make: if another RouDi runs, or one
// left its segments behind, iceoryx is skipped.
class Roudi {
 public:
  // Starts iox-roudi and waits until it says it is ready; or returns why not.
  std::string start() {
    std::string binary;
#ifdef TETHER_BENCH_IOX_ROUDI
    if (::access(TETHER_BENCH_IOX_ROUDI, X_OK) == 0) binary = TETHER_BENCH_IOX_ROUDI;
#endif
    if (binary.empty()) binary = find_in_path("iox-roudi");
    if (binary.empty()) return "iox-roudi not found (Debian package: iceoryx)";
    int lock = ::open(kRoudiLock, O_RDONLY | O_CLOEXEC);
    if (lock >= 0) {
      bool held = ::flock(lock, LOCK_EX | LOCK_NB) != 0;
      ::close(lock);
      if (held) return fmt::format("another RouDi is running (it holds {})", kRoudiLock);
    }
    for (const std::string& p : {std::string(kRoudiManagement), roudi_payload_segment(),
                                 std::string(kRoudiLock), std::string(kRoudiSocket)}) {
      if (::access(p.c_str(), F_OK) == 0)
        return fmt::format("{} exists (a RouDi that died left it; not ours to remove)", p);
    }
    // Only the chunks the benchmark uses: 64 B and 4 KiB payloads with their
    // chunk header, more than a subscriber queue (256) can hold.
    config_ = scratch_dir() + "/roudi.toml";
    log_ = scratch_dir() + "/roudi.log";
    std::ofstream(config_) << "[general]\nversion = 1\n\n[[segment]]\n\n"
                              "[[segment.mempool]]\nsize = 128\ncount = 4096\n\n"
                              "[[segment.mempool]]\nsize = 4224\ncount = 1024\n";
    std::fflush(nullptr);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) die("fork");
    if (pid_ == 0) {
      // SIGTERM, not SIGKILL, if this program dies: RouDi then removes its
      // segments and sockets itself.
      (void)::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) _exit(111);
      cpu_set_t all;
      CPU_ZERO(&all);
      for (long c = 0; c < ::sysconf(_SC_NPROCESSORS_ONLN); ++c) CPU_SET(static_cast<int>(c), &all);
      (void)::sched_setaffinity(0, sizeof all, &all);  // not on CPU0 with the measuring end
      int out = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (out < 0 || in < 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0)
        _exit(112);
      // -k 1: at its exit, RouDi kills registered apps that ignored its
      // SIGTERM after 1 s rather than 45 (none should be left).
      const char* args[] = {"iox-roudi", "-c", config_.c_str(), "-l", "warning",
                            "-k",        "1",  nullptr};
      ::execv(binary.c_str(), const_cast<char* const*>(args));
      _exit(127);
    }
    const auto until = bench::clock::now() + std::chrono::seconds(20);
    for (;;) {
      std::ifstream in(log_);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (text.find("RouDi is ready for clients") != std::string::npos) break;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return fmt::format("iox-roudi {}: {}", describe_status(status), last_line(text));
      }
      if (bench::clock::now() > until) {
        stop();
        return "iox-roudi did not say it was ready within 20 s: " + last_line(text);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ready_ = true;
    return {};
  }

  // SIGTERM, then SIGKILL after 10 s; and if RouDi, once dead, left any of
  // its objects (it held the lock: they are its), removes them.
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      const auto until = bench::clock::now() + std::chrono::seconds(10);
      while (::waitpid(pid_, &status, WNOHANG) != pid_) {
        if (bench::clock::now() > until) {
          ::kill(pid_, SIGKILL);
          ::waitpid(pid_, &status, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      pid_ = -1;
    }
    if (ready_) {
      for (const std::string& p :
           {std::string(kRoudiManagement), roudi_payload_segment(), std::string(kRoudiSocket),
            std::string(kRoudiSocketLock), std::string(kRoudiLock)}) {
        if (::unlink(p.c_str()) == 0) fmt::print("  (RouDi left {} behind: removed)\n", p);
      }
      ready_ = false;
    }
    if (!config_.empty()) ::unlink(config_.c_str());
    if (!log_.empty()) ::unlink(log_.c_str());
  }

  ~Roudi() {
    stop();
  }

 private:
  static std::string last_line(const std::string& text) {
    std::string t = text;
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
    auto nl = t.rfind('\n');
    return nl == std::string::npos ? t : t.substr(nl + 1);
  }
  pid_t pid_ = -1;
  bool ready_ = false;
  std::string config_, log_;
};

// Runs MODE's two ends as fresh processes. An end that did not return from
// main (killed, or failed in iceoryx) may leave its socket: removed here.
Outcome iceoryx_run(const std::string& mode, std::size_t size, std::size_t count, int warm) {
  const std::string tag = unique_tag();
  auto exec_end = [&](const char* side, int fd) {
    if (fd >= 0) (void)::fcntl(fd, F_SETFD, 0);  // kept across exec
    std::string sz = std::to_string(size), n = std::to_string(count), w = std::to_string(warm),
                f = std::to_string(fd);
    const char* args[] = {"bench_queue_peers", "--iceoryx-end", mode.c_str(), side,
                          tag.c_str(),         sz.c_str(),      n.c_str(),    w.c_str(),
                          f.c_str(),           nullptr};
    ::execv("/proc/self/exe", const_cast<char* const*>(args));
    return 127;
  };
  auto o =
      in_children([&](int fd) { return exec_end("a", fd); }, [&] { return exec_end("b", -1); });
  for (const char* side : {"a", "b"})
    ::unlink(fmt::format("/tmp/tether-bench-{}-{}", tag, side).c_str());
  return o;
}
#endif

// ---------------------------------------------------------------- Python

std::string python_script() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    fs::path beside = exe.parent_path() / "peers" / "mp_bench.py";
    if (fs::exists(beside, ec)) return beside.string();
  }
#ifdef TETHER_BENCH_PEERS_DIR
  fs::path source = fs::path(TETHER_BENCH_PEERS_DIR) / "mp_bench.py";
  if (fs::exists(source, ec)) return source.string();
#endif
  return {};
}

struct PythonRows {
  std::string error;
  std::vector<std::pair<std::string, std::string>> info;
  std::vector<std::pair<std::string, double>> calls;
  struct Rtt {
    std::string name;
    double median, p99, p999;
  };
  std::vector<Rtt> rtts;
};

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream s(line);
  for (std::string f; std::getline(s, f, '\t');) out.push_back(f);
  return out;
}

PythonRows run_python() {
  PythonRows rows;
  std::string python = find_in_path("python3");
  if (python.empty()) {
    rows.error = "python3 not found in PATH";
    return rows;
  }
  std::string script = python_script();
  if (script.empty()) {
    rows.error = "peers/mp_bench.py not found beside the program nor in TETHER_BENCH_PEERS_DIR";
    return rows;
  }
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) die("pipe2");
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    (void)::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::dup2(out[1], 1) < 0) _exit(112);
    const char* args[] = {"python3", script.c_str(), "--tsv", quick ? "--quick" : nullptr, nullptr};
    ::execv(python.c_str(), const_cast<char* const*>(args));
    _exit(127);
  }
  ::close(out[1]);
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    rows.error = fmt::format("{} {} {}", python, script, describe_status(status));
    return rows;
  }
  std::stringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    auto f = split_tabs(line);
    if (f.size() == 3 && f[0] == "info") rows.info.emplace_back(f[1], f[2]);
    if (f.size() == 3 && f[0] == "call") rows.calls.emplace_back(f[1], std::stod(f[2]));
    if (f.size() == 6 && f[0] == "rtt")
      rows.rtts.push_back({f[1], std::stod(f[2]), std::stod(f[3]), std::stod(f[4])});
  }
  if (rows.calls.empty() && rows.rtts.empty()) rows.error = "mp_bench.py printed no rows";
  return rows;
}

// ns per call of `body`, median of rounds of n calls (as bench_queue).
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

void python_section() {
  fmt::print("\nPython multiprocessing (bench/peers/mp_bench.py, its own rounds) and tether\n");
  PythonRows py = run_python();
  auto call_row = [](std::string_view name, double ns) {
    fmt::print("  {:<48} {:10.1f} ns\n", name, ns);
  };
  if (!py.error.empty()) {
    print_skip("multiprocessing", py.error);
  } else {
    std::string version, method;
    for (const auto& [k, v] : py.info) {
      if (k == "python") version = v;
      if (k == "start_method") method = v;
    }
    fmt::print(
        "  ({}, start method {}; its Queue sleeps between messages: compare with the "
        "peer-asleep rows)\n",
        version, method);
    for (const auto& r : py.rtts) {
      fmt::print(
          "  {:<48} median {:8.0f} ns  p99 {:8.0f} ns  p99.9 {:8.0f} ns  one-way {:7.0f} ns\n",
          r.name, r.median, r.p99, r.p999, r.median / 2);
    }
    for (const auto& [name, ns] : py.calls) call_row(name, ns);
  }
  // tether's counterparts, in this process.
  const int n = quick ? 100000 : 2000000;
  {
    auto q = make_queue(64, 1 << 16, 512);
    std::byte msg[64] = {};
    call_row("tether Queue put + get, one process", per_call(n, [&](int) {
               if (!q.put(std::span(msg)) || !q.get(std::span(msg))) die("Queue put/get");
             }));
  }
  auto v = tether::Value<long>::anonymous(0);
  if (!v) die("Value::anonymous");
  call_row("tether Value<long>: lock(), ++*get()", per_call(n, [&](int) {
             auto g = v->lock();
             ++*v->get();
           }));
  auto d = tether::Dict::anonymous({.capacity = 4096});
  if (!d) die("Dict::anonymous");
  std::vector<std::string> keys;
  for (int i = 0; i < 1000; ++i) {
    keys.push_back(fmt::format("key-{:06}", i));
    (void)d->set_value(keys.back(), std::int64_t{i});
  }
  std::string into;
  call_row("tether Dict get, 10-byte key", per_call(n, [&](int i) {
             (void)d->get_into(keys[static_cast<std::size_t>(i) % keys.size()], into);
           }));
  call_row("tether Dict set, replacing an 8-byte value", per_call(n, [&](int i) {
             (void)d->set_value(keys[static_cast<std::size_t>(i) % keys.size()], std::int64_t{i});
           }));
}

}  // namespace

int main(int argc, char** argv) {
#ifdef TETHER_BENCH_ICEORYX
  if (argc > 1 && std::string_view(argv[1]) == "--iceoryx-end") return iceoryx_end(argc, argv);
#endif
  quick = bench::quick_mode(argc, argv);
  std::signal(SIGPIPE, SIG_IGN);
  fmt::print("bench_queue_peers on {}{}\n", bench::machine_description(), quick ? " (quick)" : "");
  fmt::print("ends pinned to CPU {} (measuring) and CPU {}; variants interleaved\n", cpu_a, cpu_b);
  bench::pin(cpu_a);

  // Which peers run, or why not.
  std::string boost_why, zmq_why, nng_why, iox_why;
#ifdef TETHER_BENCH_BOOST
  fmt::print("peer: Boost.Interprocess {}.{}.{} message_queue\n", BOOST_VERSION / 100000,
             BOOST_VERSION / 100 % 1000, BOOST_VERSION % 100);
#else
  boost_why = "Boost.Interprocess not found at configure time (Debian: libboost-dev)";
#endif
#ifdef TETHER_BENCH_ZMQ
  {
    int major = 0, minor = 0, patch = 0;
    zmq_version(&major, &minor, &patch);
    fmt::print("peer: ZeroMQ {}.{}.{} PAIR over ipc://\n", major, minor, patch);
  }
#else
  zmq_why = "ZeroMQ not found at configure time (Debian: libzmq3-dev)";
#endif
#ifdef TETHER_BENCH_NNG
  fmt::print("peer: NNG {} pair0 over ipc://\n", nng_version());
#else
  nng_why = "NNG not found at configure time (Debian: libnng-dev)";
#endif
#ifdef TETHER_BENCH_ICEORYX
  Roudi roudi;
  iox_why = roudi.start();
  if (iox_why.empty())
    fmt::print("peer: iceoryx {} untyped publish/subscribe, through a RouDi started here\n",
               ICEORYX_LATEST_RELEASE_VERSION);
#else
  iox_why = "iceoryx not found at configure time (Debian: libiceoryx-posh-dev, iceoryx)";
#endif

  // ------------------------------------------------ round trip, spinning
  fmt::print("\nround trip, 64 B, peer spinning ({} trips x {} rounds, interleaved)\n",
             spin_trips(), rounds());
  {
    TetherPair tq(64, 1 << 16, 1u << 30);
    std::vector<Variant> variants;
    variants.push_back({"tether Queue, one to one", [&] { return tether_rtt(tq, spin_trips()); }});
#ifdef TETHER_BENCH_BOOST
    BoostPair bq(64, 1024);
    variants.push_back({"Boost message_queue, try_receive spin",
                        [&] { return boost_rtt(bq, spin_trips(), true); }});
#endif
#ifdef TETHER_BENCH_ZMQ
    variants.push_back(
        {"ZeroMQ PAIR ipc://, ZMQ_DONTWAIT spin", [&] { return zmq_rtt(spin_trips(), true); }});
#endif
#ifdef TETHER_BENCH_NNG
    variants.push_back(
        {"NNG pair0 ipc://, NONBLOCK spin", [&] { return nng_rtt(spin_trips(), true); }});
#endif
#ifdef TETHER_BENCH_ICEORYX
    if (iox_why.empty()) {
      variants.push_back({"iceoryx pub/sub, take() spin", [&] {
                            return iceoryx_run("rtt", 64, static_cast<std::size_t>(spin_trips()),
                                               warmup());
                          }});
    }
#endif
    print_rtts(interleave(rounds(), variants));
    if (!boost_why.empty()) print_skip("Boost message_queue", boost_why);
    if (!zmq_why.empty()) print_skip("ZeroMQ", zmq_why);
    if (!nng_why.empty()) print_skip("NNG", nng_why);
    if (!iox_why.empty()) print_skip("iceoryx", iox_why);
  }

  // ------------------------------------------------ round trip, asleep
  fmt::print("\nround trip, 64 B, peer asleep in a blocking receive ({} trips x {} rounds)\n",
             sleep_trips(), rounds());
  {
    TetherPair tq(64, 1 << 16, 0);
    std::vector<Variant> variants;
    variants.push_back(
        {"raw futex ping-pong (the floor)", [&] { return futex_rtt(sleep_trips()); }});
    variants.push_back(
        {"tether Queue, one to one, spin 0", [&] { return tether_rtt(tq, sleep_trips()); }});
#ifdef TETHER_BENCH_BOOST
    BoostPair bq(64, 1024);
    variants.push_back(
        {"Boost message_queue, receive()", [&] { return boost_rtt(bq, sleep_trips(), false); }});
#endif
#ifdef TETHER_BENCH_ZMQ
    variants.push_back(
        {"ZeroMQ PAIR ipc://, blocking zmq_recv", [&] { return zmq_rtt(sleep_trips(), false); }});
#endif
#ifdef TETHER_BENCH_NNG
    variants.push_back(
        {"NNG pair0 ipc://, blocking nng_recv", [&] { return nng_rtt(sleep_trips(), false); }});
#endif
    print_rtts(interleave(rounds(), variants));
    if (!boost_why.empty()) print_skip("Boost message_queue", boost_why);
    if (!zmq_why.empty()) print_skip("ZeroMQ", zmq_why);
    if (!nng_why.empty()) print_skip("NNG", nng_why);
    fmt::print("  {:<48} not measured: no blocking take (a WaitSet wakes it)\n", "iceoryx");
  }

  // ------------------------------------------------ throughput
  fmt::print("\nthroughput, one way, receiver timing (best of {} runs, interleaved)\n",
             tp_rounds());
  for (std::size_t size : {std::size_t{64}, std::size_t{4096}}) {
    // The same 4 MiB ring as bench_queue's throughput rows; the default
    // spin (512) before a get sleeps.
    TetherPair tq(size, std::size_t{4} << 20, tether::QueueOptions{}.spin);
    std::vector<Variant> variants;
    variants.push_back({"tether Queue, copying", [&] { return tether_tp(tq, size, false); }});
    variants.push_back(
        {"tether Queue, loan + view (2 B touched)", [&] { return tether_tp(tq, size, true); }});
#ifdef TETHER_BENCH_BOOST
    variants.push_back({"Boost message_queue", [&] { return boost_tp(size); }});
#endif
#ifdef TETHER_BENCH_ZMQ
    variants.push_back({"ZeroMQ PAIR ipc://", [&] { return zmq_tp(size); }});
#endif
#ifdef TETHER_BENCH_NNG
    variants.push_back({"NNG pair0 ipc://", [&] { return nng_tp(size); }});
#endif
#ifdef TETHER_BENCH_ICEORYX
    if (iox_why.empty()) {
      variants.push_back({"iceoryx pub/sub, copying in and out",
                          [&] { return iceoryx_run("tp", size, tp_count(size), 0); }});
      variants.push_back({"iceoryx pub/sub, loan + take (2 B touched)",
                          [&] { return iceoryx_run("tpz", size, tp_count(size), 0); }});
    }
#endif
    for (const auto& g : interleave(tp_rounds(), variants)) {
      if (!g.error.empty() || g.samples.empty()) {
        fmt::print("  {:<8} {:<44} FAILED: {}\n", bench::size_name(size), g.name,
                   g.error.empty() ? "no samples" : g.error);
        continue;
      }
      double rate = *std::max_element(g.samples.begin(), g.samples.end());
      fmt::print("  {:<8} {:<44} {:10.2f} M msg/s  {:8.2f} GB/s\n", bench::size_name(size), g.name,
                 rate / 1e6, rate * static_cast<double>(size) / 1e9);
    }
  }
  if (!boost_why.empty()) print_skip("Boost message_queue", boost_why);
  if (!zmq_why.empty()) print_skip("ZeroMQ", zmq_why);
  if (!nng_why.empty()) print_skip("NNG", nng_why);
  if (!iox_why.empty()) print_skip("iceoryx", iox_why);

#ifdef TETHER_BENCH_ICEORYX
  roudi.stop();
#endif
  python_section();

  std::error_code ec;
  fs::remove_all(scratch_dir(), ec);
  return 0;
}
