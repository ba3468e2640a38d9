// Channel benchmark: for each transport, 64 B round trip and one-way
// throughput through tether's Channel next to the raw system calls of the
// same mechanism (given the same kernel buffer sizes), in the same run;
// plus ZeroMQ and NNG pairs over ipc:// when they were found at configure
// time.
//
//   bench_channel [--quick]
#include <fcntl.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/msg.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "harness.hpp"
#include "tether/channel.hpp"

#ifdef TETHER_BENCH_ZMQ
#include <zmq.h>
#endif
#ifdef TETHER_BENCH_NNG
#include <nng/nng.h>
#include <nng/protocol/pair0/pair.h>
#endif

namespace {

bool quick = false;
auto [cpu_a, cpu_b] = bench::cpu_pair();
constexpr int kBuffer = 1 << 20;  // what Channel asks for; the raw side gets the same

// ---------------------------------------------------------------- raw endpoints

// A raw, bidirectional byte or message endpoint: two fds (in, out), or one
// queue handle.
struct Raw {
  enum Kind { stream, packet, posix_mq, sysv } kind = stream;
  int in = -1, out = -1;  // fds, or mq descriptors
  int sysv_id = -1;
  long send_type = 1, recv_type = 2;
};

bool raw_send(const Raw& r, const char* p, std::size_t n) {
  switch (r.kind) {
    case Raw::stream:
      while (n > 0) {
        ssize_t w = ::send(r.out, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK) w = ::write(r.out, p, n);
        if (w <= 0) return false;
        p += w;
        n -= static_cast<std::size_t>(w);
      }
      return true;
    case Raw::packet:
      return ::send(r.out, p, n, MSG_NOSIGNAL) == static_cast<ssize_t>(n);
    case Raw::posix_mq:
      return ::mq_send(r.out, p, n, 0) == 0;
    case Raw::sysv: {
      static thread_local std::vector<char> buf;
      buf.resize(sizeof(long) + n);
      std::memcpy(buf.data(), &r.send_type, sizeof(long));
      std::memcpy(buf.data() + sizeof(long), p, n);
      return ::msgsnd(r.sysv_id, buf.data(), n, 0) == 0;
    }
  }
  return false;
}

bool raw_recv(const Raw& r, char* p, std::size_t n) {
  switch (r.kind) {
    case Raw::stream:
      while (n > 0) {
        ssize_t got = ::read(r.in, p, n);
        if (got <= 0) return false;
        p += got;
        n -= static_cast<std::size_t>(got);
      }
      return true;
    case Raw::packet:
      return ::recv(r.in, p, n, 0) == static_cast<ssize_t>(n);
    case Raw::posix_mq: {
      static thread_local std::vector<char> buf(8192);
      ssize_t got = ::mq_receive(r.in, buf.data(), buf.size(), nullptr);
      if (got != static_cast<ssize_t>(n)) return false;
      std::memcpy(p, buf.data(), n);
      return true;
    }
    case Raw::sysv: {
      static thread_local std::vector<char> buf;
      buf.resize(sizeof(long) + n);
      if (::msgrcv(r.sysv_id, buf.data(), n, r.recv_type, 0) != static_cast<ssize_t>(n))
        return false;
      std::memcpy(p, buf.data() + sizeof(long), n);
      return true;
    }
  }
  return false;
}

void tune(int fd) {
  int size = kBuffer;
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size) != 0)
    (void)::fcntl(fd, F_SETPIPE_SZ, size);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

// Makes two connected raw ends for a transport. Everything created is
// released by `cleanup`.
struct RawPair {
  Raw a, b;
  std::function<void()> cleanup;
};

RawPair raw_pair(const std::string& transport) {
  RawPair p;
  if (transport == "pipe") {
    int x[2], y[2];
    if (::pipe2(x, O_CLOEXEC) || ::pipe2(y, O_CLOEXEC)) std::abort();
    for (int fd : {x[0], x[1], y[0], y[1]}) tune(fd);
    p.a = {Raw::stream, y[0], x[1]};
    p.b = {Raw::stream, x[0], y[1]};
    p.cleanup = [=] {
      for (int fd : {x[0], x[1], y[0], y[1]}) ::close(fd);
    };
  } else if (transport == "unix" || transport == "unix-seqpacket") {
    int sv[2];
    int type = transport == "unix" ? SOCK_STREAM : SOCK_SEQPACKET;
    if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv)) std::abort();
    tune(sv[0]);
    tune(sv[1]);
    auto kind = transport == "unix" ? Raw::stream : Raw::packet;
    p.a = {kind, sv[0], sv[0]};
    p.b = {kind, sv[1], sv[1]};
    p.cleanup = [=] {
      ::close(sv[0]);
      ::close(sv[1]);
    };
  } else if (transport == "tcp") {
    int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(l, reinterpret_cast<sockaddr*>(&addr), len) || ::listen(l, 1)) std::abort();
    ::getsockname(l, reinterpret_cast<sockaddr*>(&addr), &len);
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(c, reinterpret_cast<sockaddr*>(&addr), len)) std::abort();
    int s = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    ::close(l);
    int one = 1;
    for (int fd : {c, s}) {
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      tune(fd);
    }
    p.a = {Raw::stream, c, c};
    p.b = {Raw::stream, s, s};
    p.cleanup = [=] {
      ::close(c);
      ::close(s);
    };
  } else if (transport == "mq") {
    std::string up = fmt::format("/bench-raw-{}-up", ::getpid()),
                down = fmt::format("/bench-raw-{}-down", ::getpid());
    mq_attr attr{};
    attr.mq_maxmsg = 10;
    attr.mq_msgsize = 8192;
    mqd_t u = ::mq_open(up.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &attr);
    mqd_t d = ::mq_open(down.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &attr);
    if (u < 0 || d < 0) std::abort();
    p.a = {Raw::posix_mq, d, u};
    p.b = {Raw::posix_mq, u, d};
    p.cleanup = [=] {
      ::mq_close(u);
      ::mq_close(d);
      ::mq_unlink(up.c_str());
      ::mq_unlink(down.c_str());
    };
  } else if (transport == "sysv") {
    int id = ::msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    if (id < 0) std::abort();
    p.a = {Raw::sysv, -1, -1, id, 1, 2};
    p.b = {Raw::sysv, -1, -1, id, 2, 1};
    p.cleanup = [=] { ::msgctl(id, IPC_RMID, nullptr); };
  }
  return p;
}

// ---------------------------------------------------------------- tether endpoints

struct ChannelPair {
  tether::Channel a, b;
  std::optional<tether::ChannelListener> listener;
};

ChannelPair channel_pair(const std::string& transport) {
  ChannelPair p;
  std::string address;
  if (transport == "pipe") {
    auto [a, b] = tether::Channel::pipe_pair().value();
    p.a = std::move(a);
    p.b = std::move(b);
    return p;
  }
  if (transport == "unix") {
    auto [a, b] = tether::Channel::socket_pair(tether::SocketType::stream).value();
    p.a = std::move(a);
    p.b = std::move(b);
    return p;
  }
  if (transport == "unix-seqpacket") {
    auto [a, b] = tether::Channel::socket_pair(tether::SocketType::seqpacket).value();
    p.a = std::move(a);
    p.b = std::move(b);
    return p;
  }
  address = transport == "tcp"  ? "tcp://127.0.0.1:0"
            : transport == "mq" ? fmt::format("mq:/bench-ch-{}", ::getpid())
                                : fmt::format("sysv:{}", 0x7c000000 + (::getpid() & 0xffffff));
  p.listener = tether::ChannelListener::listen(address).value();
  p.a = tether::Channel::connect(p.listener->address(), std::chrono::seconds(10)).value();
  p.b = p.listener->accept(std::chrono::seconds(10)).value();
  return p;
}

// ---------------------------------------------------------------- measurements

// Round trips of 64 B: the peer echoes; one sample per round trip (µs).
template <class Send, class Recv>
std::vector<double> round_trips(int iters, Send&& send_a, Recv&& recv_a,
                                const std::function<int()>& peer) {
  pid_t pid = bench::start_peer(cpu_b, peer);
  bench::pin(cpu_a);
  std::vector<double> samples;
  samples.reserve(iters);
  for (int i = 0; i < iters; ++i) {
    auto t0 = bench::clock::now();
    if (!send_a() || !recv_a()) std::abort();
    samples.push_back(bench::micros_since(t0));
  }
  bench::join_peer(pid);
  return samples;
}

std::vector<double> rt_raw(const std::string& t, int iters) {
  auto p = raw_pair(t);
  char buf[64] = {};
  auto samples = round_trips(
      iters, [&] { return raw_send(p.a, buf, 64); }, [&] { return raw_recv(p.a, buf, 64); },
      [&] {
        char echo[64];
        for (int i = 0; i < iters; ++i) {
          if (!raw_recv(p.b, echo, 64) || !raw_send(p.b, echo, 64)) return 1;
        }
        return 0;
      });
  p.cleanup();
  return samples;
}

std::vector<double> rt_channel(const std::string& t, int iters) {
  auto p = channel_pair(t);
  std::vector<std::byte> msg(64);
  return round_trips(
      iters, [&] { return p.a.send(msg).has_value(); }, [&] { return p.a.recv().has_value(); },
      [&] {
        for (int i = 0; i < iters; ++i) {
          auto m = p.b.recv();
          if (!m || !p.b.send(*m)) return 1;
        }
        return 0;
      });
}

// One-way throughput (GB/s) of `count` messages of `size`.
double throughput(std::size_t size, std::size_t count, const std::function<bool()>& send_one,
                  const std::function<bool()>& recv_one, int gate_in, int gate_out) {
  pid_t pid = bench::start_peer(cpu_b, [&] {
    char go;
    if (::read(gate_in, &go, 1) != 1) return 1;
    for (std::size_t i = 0; i < count; ++i) {
      if (!send_one()) return 2;
    }
    return 0;
  });
  bench::pin(cpu_a);
  auto t0 = bench::clock::now();
  if (::write(gate_out, "g", 1) != 1) std::abort();
  for (std::size_t i = 0; i < count; ++i) {
    if (!recv_one()) std::abort();
  }
  double us = bench::micros_since(t0);
  bench::join_peer(pid);
  return static_cast<double>(size * count) / us / 1e3;
}

std::vector<double> tp_raw(const std::string& t, std::size_t size, std::size_t count) {
  auto p = raw_pair(t);
  int gate[2];
  if (::pipe2(gate, O_CLOEXEC)) std::abort();
  std::vector<char> out(size, 'x'), in(size);
  double gbps = throughput(
      size, count, [&] { return raw_send(p.b, out.data(), size); },
      [&] { return raw_recv(p.a, in.data(), size); }, gate[0], gate[1]);
  ::close(gate[0]);
  ::close(gate[1]);
  p.cleanup();
  return {gbps};
}

std::vector<double> tp_channel(const std::string& t, std::size_t size, std::size_t count) {
  auto p = channel_pair(t);
  int gate[2];
  if (::pipe2(gate, O_CLOEXEC)) std::abort();
  std::vector<std::byte> out(size, std::byte{'x'}), in;
  double gbps = throughput(
      size, count, [&] { return p.b.send(out).has_value(); },
      [&] { return p.a.recv_into(in).has_value() && in.size() == size; }, gate[0], gate[1]);
  ::close(gate[0]);
  ::close(gate[1]);
  return {gbps};
}

// ---------------------------------------------------------------- peers: ZeroMQ, NNG

#ifdef TETHER_BENCH_ZMQ
std::vector<double> rt_zmq(int iters) {
  std::string endpoint = fmt::format("ipc:///tmp/bench-zmq-{}", ::getpid());
  pid_t pid = bench::start_peer(cpu_b, [&] {
    void* ctx = zmq_ctx_new();
    void* s = zmq_socket(ctx, ZMQ_PAIR);
    if (zmq_bind(s, endpoint.c_str()) != 0) return 1;
    char buf[64];
    for (int i = 0; i < iters; ++i) {
      if (zmq_recv(s, buf, sizeof buf, 0) != 64 || zmq_send(s, buf, 64, 0) != 64) return 2;
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 0;
  });
  bench::pin(cpu_a);
  void* ctx = zmq_ctx_new();
  void* s = zmq_socket(ctx, ZMQ_PAIR);
  zmq_connect(s, endpoint.c_str());
  char buf[64] = {};
  std::vector<double> samples;
  for (int i = 0; i < iters; ++i) {
    auto t0 = bench::clock::now();
    if (zmq_send(s, buf, 64, 0) != 64 || zmq_recv(s, buf, 64, 0) != 64) std::abort();
    samples.push_back(bench::micros_since(t0));
  }
  zmq_close(s);
  zmq_ctx_term(ctx);
  bench::join_peer(pid);
  ::unlink(endpoint.substr(6).c_str());
  return samples;
}
#endif

#ifdef TETHER_BENCH_NNG
// NNG refuses to run in a process forked after it was initialised, so the
// whole measurement runs in a forked "measurer" that forks its server
// before touching NNG, and sends its samples back through a pipe.
std::vector<double> rt_nng(int iters) {
  std::string endpoint = fmt::format("ipc:///tmp/bench-nng-{}", ::getpid());
  int samples_pipe[2];
  if (::pipe2(samples_pipe, O_CLOEXEC)) std::abort();
  pid_t measurer = bench::start_peer(cpu_a, [&] {
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC)) return 1;
    pid_t server = bench::start_peer(cpu_b, [&] {
      nng_socket s;
      if (nng_pair0_open(&s) != 0 || nng_listen(s, endpoint.c_str(), nullptr, 0) != 0) return 1;
      (void)!::write(ready[1], "r", 1);
      char buf[64];
      for (int i = 0; i < iters; ++i) {
        size_t sz = sizeof buf;
        if (nng_recv(s, buf, &sz, 0) != 0 || nng_send(s, buf, sz, 0) != 0) return 2;
      }
      nng_close(s);
      return 0;
    });
    char r;
    if (::read(ready[0], &r, 1) != 1) return 3;
    nng_socket s;
    if (nng_pair0_open(&s) != 0 || nng_dial(s, endpoint.c_str(), nullptr, 0) != 0) return 4;
    char buf[64] = {};
    std::vector<double> samples;
    for (int i = 0; i < iters; ++i) {
      auto t0 = bench::clock::now();
      size_t sz = sizeof buf;
      if (nng_send(s, buf, 64, 0) != 0 || nng_recv(s, buf, &sz, 0) != 0) return 5;
      samples.push_back(bench::micros_since(t0));
    }
    nng_close(s);
    bench::join_peer(server);
    auto bytes = samples.size() * sizeof(double);
    return ::write(samples_pipe[1], samples.data(), bytes) == static_cast<ssize_t>(bytes) ? 0 : 6;
  });
  std::vector<double> samples(static_cast<std::size_t>(iters));
  auto* p = reinterpret_cast<char*>(samples.data());
  std::size_t want = samples.size() * sizeof(double);
  while (want > 0) {
    ssize_t n = ::read(samples_pipe[0], p, want);
    if (n <= 0) std::abort();
    p += n;
    want -= static_cast<std::size_t>(n);
  }
  bench::join_peer(measurer);
  ::close(samples_pipe[0]);
  ::close(samples_pipe[1]);
  ::unlink(endpoint.substr(6).c_str());
  return samples;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  quick = bench::quick_mode(argc, argv);
  int rounds = quick ? 1 : 5, iters = quick ? 100 : 2000;
  fmt::print("# channel benchmark ({})\n", bench::machine_description());
  fmt::print(
      "# peers pinned to CPU {} and CPU {}; variants interleaved; raw ends get the same 1 MiB "
      "buffer request as Channel\n\n",
      cpu_a, cpu_b);

  // Optional arguments name the transports to measure (default: all).
  std::vector<std::string> transports = {"pipe", "unix", "unix-seqpacket", "tcp", "mq", "sysv"};
  std::vector<std::string> chosen;
  for (int i = 1; i < argc; ++i) {
    if (argv[i][0] != '-') chosen.emplace_back(argv[i]);
  }
  if (!chosen.empty()) transports = chosen;
  fmt::print("## 64 B round trip ({} each)\n\n", rounds * iters);
  fmt::print(
      "| transport | raw median µs | raw p99 | Channel median µs | Channel p99 | Channel / raw |\n"
      "|---|---:|---:|---:|---:|---:|\n");
  double unix_raw = 0;
  for (const auto& t : transports) {
    auto all = bench::interleave(
        rounds, {[&] { return rt_raw(t, iters); }, [&] { return rt_channel(t, iters); }});
    auto r = bench::summarize(all[0]), c = bench::summarize(all[1]);
    if (t == "unix") unix_raw = r.median;
    fmt::print("| {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.3f} |\n", t, r.median, r.p99,
               c.median, c.p99, c.median / r.median);
  }
#if defined(TETHER_BENCH_ZMQ) || defined(TETHER_BENCH_NNG)
  fmt::print(
      "\n## peers over ipc:// (64 B round trip, {} each)\n\n| library | median µs | p99 µs | / raw "
      "unix socket |\n"
      "|---|---:|---:|---:|\n",
      rounds * iters);
#endif
#ifdef TETHER_BENCH_ZMQ
  {
    auto all = bench::interleave(rounds, {[&] { return rt_zmq(iters); }});
    auto z = bench::summarize(all[0]);
    fmt::print("| ZeroMQ PAIR | {:.2f} | {:.2f} | {:.3f} |\n", z.median, z.p99,
               z.median / unix_raw);
  }
#endif
#ifdef TETHER_BENCH_NNG
  {
    auto all = bench::interleave(rounds, {[&] { return rt_nng(iters); }});
    auto n = bench::summarize(all[0]);
    fmt::print("| NNG pair0 | {:.2f} | {:.2f} | {:.3f} |\n", n.median, n.p99, n.median / unix_raw);
  }
#endif
  (void)unix_raw;

  fmt::print("\n## one-way throughput (GB/s, median of {} runs)\n\n", quick ? 1 : 5);
  fmt::print("| transport | message | raw | Channel | Channel / raw |\n|---|---|---:|---:|---:|\n");
  for (const auto& t : transports) {
    bool queue = t == "mq" || t == "sysv";
    std::vector<std::size_t> sizes = queue ? std::vector<std::size_t>{64, 4096}
                                     : t == "unix-seqpacket"
                                         ? std::vector<std::size_t>{64, 4096, 65536}
                                         : std::vector<std::size_t>{64, 4096, 65536, 1u << 20};
    for (std::size_t size : sizes) {
      std::size_t total = size == 64 ? (4u << 20) : size == 4096 ? (64u << 20) : (256u << 20);
      if (quick) total = std::max(size * 8, total / 256);
      std::size_t count = total / size;
      auto all = bench::interleave(quick ? 1 : 5, {[&] { return tp_raw(t, size, count); },
                                                   [&] { return tp_channel(t, size, count); }});
      auto r = bench::summarize(all[0]), c = bench::summarize(all[1]);
      fmt::print("| {} | {} | {:.2f} | {:.2f} | {:.3f} |\n", t, bench::size_name(size), r.median,
                 c.median, c.median / r.median);
    }
  }
  return 0;
}
