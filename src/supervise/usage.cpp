// What workers use, read from /proc in one pass (see worker_usage in
// tether/supervise.hpp): `tether list`, `status` and `top` show it.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "internal.hpp"

namespace tether {

namespace sd = supervise_detail;

namespace {

// The Pss: line of /proc/<pid>/smaps_rollup, in bytes (0 when unreadable:
// another user's process, or one that just ended).
std::uint64_t pss_of(pid_t pid) {
  Fd fd(::open(fmt::format("/proc/{}/smaps_rollup", pid).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return 0;
  char buf[4096];
  ssize_t n = retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf - 1); });
  if (n <= 0) return 0;
  std::string_view s(buf, static_cast<std::size_t>(n));
  auto at = s.find("\nPss:");
  if (at == std::string_view::npos) return 0;
  s.remove_prefix(at + 5);
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  std::uint64_t kib = 0;
  std::from_chars(s.data(), s.data() + s.size(), kib);
  return kib * 1024;
}

// Reads a small /proc file whole into `buf`; its length, 0 when unreadable.
std::size_t read_small(const std::string& path, char* buf, std::size_t size) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return 0;
  ssize_t n = retry_eintr([&] { return ::read(fd.get(), buf, size); });
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

// The children of every thread of `pid`, appended to `out`.
void children_of(pid_t pid, std::vector<pid_t>& out) {
  std::string tasks = fmt::format("/proc/{}/task", pid);
  DIR* d = ::opendir(tasks.c_str());
  if (d == nullptr) return;
  std::string text;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    // Read to its end: a process with hundreds of children lists more
    // than one read returns, and a pid cut in two would be a wrong one.
    text.clear();
    Fd fd(::open(fmt::format("{}/{}/children", tasks, e->d_name).c_str(), O_RDONLY | O_CLOEXEC));
    char buf[4096];
    for (ssize_t n = 0;
         fd && (n = retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); })) > 0;) {
      text.append(buf, static_cast<std::size_t>(n));
    }
    std::string_view s(text);
    while (!s.empty()) {
      pid_t child = 0;
      auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), child);
      if (ec != std::errc()) {
        s.remove_prefix(1);
        continue;
      }
      if (child > 0) out.push_back(child);
      s.remove_prefix(static_cast<std::size_t>(end - s.data()));
    }
  }
  ::closedir(d);
}

}  // namespace

namespace supervise_detail {

TreeMemory descendants_memory(pid_t root) {
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  TreeMemory m;
  std::vector<pid_t> todo;
  children_of(root, todo);
  // A tree is walked at most once per process (a bound, should a pid be
  // listed twice while processes come and go).
  for (std::size_t visited = 0; !todo.empty() && visited < 100000; ++visited) {
    pid_t p = todo.back();
    todo.pop_back();
    char buf[256];
    std::size_t n = read_small(fmt::format("/proc/{}/statm", p), buf, sizeof buf);
    std::string_view s(buf, n);
    auto sp = s.find(' ');
    if (sp == std::string_view::npos) continue;  // gone
    std::uint64_t resident = 0;
    std::from_chars(s.data() + sp + 1, s.data() + s.size(), resident);
    m.rss_bytes += resident * page;
    ++m.processes;
    children_of(p, todo);
  }
  return m;
}

}  // namespace supervise_detail

std::vector<std::optional<WorkerUsage>> worker_usage(const std::vector<WorkerInfo>& workers,
                                                     bool pss) {
  std::vector<std::optional<WorkerUsage>> out(workers.size());
  // Session (the worker's pid) → the worker.
  std::map<pid_t, std::size_t> by_session;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    const auto& w = workers[i];
    if (w.pid > 1 && w.pid_start != 0 && w.supervisor_alive) by_session.emplace(w.pid, i);
  }
  if (by_session.empty()) return out;
  static const long page = ::sysconf(_SC_PAGESIZE);
  static const long ticks = ::sysconf(_SC_CLK_TCK);
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  std::vector<bool> leader_seen(workers.size(), false);
  std::vector<std::pair<pid_t, std::size_t>> members;  // pid, worker: whose PSS to read
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    pid_t pid = 0;
    auto name = std::string_view(e->d_name);
    if (std::from_chars(name.data(), name.data() + name.size(), pid).ec != std::errc()) continue;
    auto st = sd::read_proc_stat(pid);
    if (!st) continue;
    auto it = by_session.find(st->session);
    if (it == by_session.end()) continue;
    const auto& w = workers[it->second];
    bool leader = pid == w.pid;
    if (leader ? st->start_ticks != w.pid_start : st->start_ticks < w.pid_start) continue;
    if (leader) leader_seen[it->second] = true;
    auto& u = out[it->second];
    if (!u) u.emplace();
    ++u->processes;
    // With what its ended children used, once it waited for them: a
    // worker's CPU does not fall when a child ends (and a child still
    // running is counted once, by itself). An orphan the supervisor reaped
    // takes its time with it.
    u->cpu += std::chrono::milliseconds((st->cpu_ticks + st->reaped_ticks) * 1000 /
                                        static_cast<std::uint64_t>(ticks));
    u->rss_bytes += st->rss_pages * static_cast<std::uint64_t>(page);
    if (pss) members.emplace_back(pid, it->second);
  }
  ::closedir(d);
  // smaps_rollup is the costly read (the kernel walks the process's page
  // tables: about 60 µs for a small program here, against 5 for stat), so
  // it is shared among a few threads: with 500 workers that is most of
  // `list`'s time.
  if (!members.empty()) {
    std::vector<std::uint64_t> pss_bytes(members.size());
    std::size_t threads = std::min<std::size_t>(
        {4, std::max(1u, std::thread::hardware_concurrency()), (members.size() + 63) / 64});
    auto share = [&](std::size_t t) {
      for (std::size_t k = t; k < members.size(); k += threads)
        pss_bytes[k] = pss_of(members[k].first);
    };
    std::vector<std::thread> pool;
    for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(share, t);
    share(0);
    for (auto& th : pool) th.join();
    for (std::size_t k = 0; k < members.size(); ++k)
      out[members[k].second]->pss_bytes += pss_bytes[k];
  }
  for (std::size_t i = 0; i < workers.size(); ++i) {
    // Without its leader, the session is not the worker's (it ended, and
    // what is left was counted by chance of a reused session id).
    if (!leader_seen[i]) {
      out[i].reset();
      continue;
    }
    auto up = workers[i].uptime();
    if (out[i] && up.count() > 0) {
      out[i]->cpu_percent =
          100.0 * static_cast<double>(out[i]->cpu.count()) / static_cast<double>(up.count());
    }
  }
  return out;
}

}  // namespace tether
