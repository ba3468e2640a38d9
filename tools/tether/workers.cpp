// tether open / list / status / exit / stop / start / restart / signal /
// send / logs, and the hidden entry points the supervisor and the demo
// worker run as. See docs/supervisor.md and docs/cli.md.
#include "workers.hpp"

#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "launcher.hpp"
#include "tether/supervise.hpp"
#include "tether/supervise/launch.hpp"
#include "tether/tether.hpp"

namespace tether_cli {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

// Exit codes come from tether's own codes, never from errnos: an ESRCH from
// a kill(2) somewhere is not "no such worker".
int report_error(const tether::Error& e) {
  fmt::print(stderr, "tether: {}\n", e.message());
  if (e == tether::errc::no_such_worker) return 3;
  if (e == tether::errc::not_running) return 4;
  if (e == std::errc::timed_out) return 5;
  if (e == tether::errc::bad_definition) return 6;
  return 1;
}

namespace {

// Every --timeout is checked to be positive and finite by the parser.
tether::Deadline seconds(double s) {
  return tether::Deadline(std::chrono::duration<double>(s));
}

struct Options {
  // open
  std::string name, restart = "on-failure", cwd;
  std::vector<std::string> command, env;
  bool non_blocking = false, wait_ready = false, json_out = false, no_wait = false, tty = false,
       start_down = false;
  bool prune = false, follow = false, rolling = false;
  double poll_interval = 1.0, grace = 5.0, timeout = 10.0, check_interval = 60.0;
  int max_restarts = -1, ready_fd = 3, lines = 20, log_keep = 3, count = 1;
  std::uint64_t log_size = 1u << 20;
  std::string max_memory;  // a size: "512M"
  double memory_interval = 1.0;
  // the others
  std::string key, signal;
  std::vector<std::string> keys;  // exit, stop, start, restart: one or more
  std::vector<std::string> words;
};

Options opt;
CLI::App *open_cmd, *list_cmd, *status_cmd, *exit_cmd, *stop_cmd, *start_cmd, *restart_cmd,
    *signal_cmd, *send_cmd, *logs_cmd, *demo_worker_cmd;

}  // namespace

std::string self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "tether" : p.string();
}

std::string new_id() {
  unsigned char b[4];
  if (::getrandom(b, sizeof b, 0) != sizeof b) {
    auto t = std::chrono::steady_clock::now().time_since_epoch().count() ^ ::getpid();
    std::memcpy(b, &t, sizeof b);
  }
  return fmt::format("{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3]);
}

tether::Result<tether::StateDir> state_dir(bool create) {
  return tether::StateDir::open_default(create);
}

std::string who(const tether::WorkerInfo& w) {
  return w.display_name();
}

std::string uptime(const tether::WorkerInfo& w) {
  if (w.started_ms == 0 || w.pid == 0) return "-";
  auto s = w.uptime().count() / 1000;
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}d{:02}h", s / 86400, (s % 86400) / 3600);
}

// "812K", "3.4M", "1.2G": memory as people read it.
std::string bytes_shown(std::uint64_t b) {
  if (b < 1024ull * 1024) return fmt::format("{}K", b / 1024);
  if (b < 1024ull * 1024 * 1024) return fmt::format("{:.1f}M", static_cast<double>(b) / 1048576.0);
  return fmt::format("{:.1f}G", static_cast<double>(b) / 1073741824.0);
}

namespace {

void add_usage(json& j, const std::optional<tether::WorkerUsage>& u) {
  if (!u) {
    j["usage"] = nullptr;
    return;
  }
  j["usage"] = {{"processes", u->processes},
                {"cpu_ms", u->cpu.count()},
                {"cpu_percent", std::round(u->cpu_percent * 10) / 10},
                {"rss_bytes", u->rss_bytes},
                {"pss_bytes", u->pss_bytes}};
}

json to_json(const tether::WorkerInfo& w) {
  json j = {{"id", w.id},
            {"name", w.name},
            {"pid", w.pid},
            {"supervisor_pid", w.supervisor_pid},
            {"state", tether::to_string(w.state)},
            {"want", tether::to_string(w.want)},
            {"restarts", w.restarts},
            {"commands", w.commands},
            {"restart", tether::to_string(w.restart_policy)},
            {"command", w.command},
            {"dir", w.dir.string()},
            {"uptime_s", w.uptime().count() / 1000}};
  if (!w.set.empty()) j["set"] = w.set;
  if (w.last_exit_code) j["last_exit"] = {{"code", *w.last_exit_code}};
  if (w.last_exit_signal) {
    j["last_exit"] = {{"signal", *w.last_exit_signal},
                      {"signal_name", tether::signal_name(*w.last_exit_signal)}};
  }
  return j;
}

}  // namespace

// What reaches a terminal: no control characters or escape sequences from
// a name, a command or a path.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += ' ';
    out += s;
  }
  return out;
}

// The supervisors are started by launchers (see below); all or none: on any
// failure every one started is stopped again and each failure explained.
int start_specs(const tether::StateDir& dir, std::vector<Start>& starts, double timeout,
                const char* what) {
  std::map<std::string, Start*> by_id;
  for (auto& st : starts) by_id[st.spec.id] = &st;

  // The supervisors are tether-supervise, a small static program installed
  // beside this one (or this one, as `tether _supervise`, if it is missing):
  // a clean process image, without this command's parser. One such process
  // takes up to 500 specs and forks one supervisor for each, so workers
  // started together share its pages and cost one fork each, not one exec
  // (docs/benchmarks.md). The specs go through a pipe, never argv (which
  // every user can read), with the checked state directory as fd 4; every
  // supervisor answers on one report pipe (tether/supervise/launch.hpp).
  std::string program = (fs::path(self_exe()).parent_path() / "tether-supervise").string();
  if (::access(program.c_str(), X_OK) != 0) program = self_exe();
  auto report = tether::make_pipe();
  if (!report) return report_error(report.error());
  constexpr std::size_t kBatch = 500;  // one launcher's share
  std::vector<tether::Process> launchers;
  for (std::size_t first = 0; first < starts.size(); first += kBatch) {
    tether::launch::Launch batch;
    batch.state_dir = dir.path();
    for (std::size_t i = first; i < std::min(starts.size(), first + kBatch); ++i) {
      batch.specs.push_back(starts[i].spec);
    }
    auto specs = tether::make_pipe();
    if (!specs) return report_error(specs.error());
    tether::Command c(program);
    c.arg0("tether-supervise").arg("_supervise");
    auto launched = c.new_session()  // detached: no terminal, no SIGHUP when it closes
                        .stdin_from(tether::Stdio::fd(specs->first.get()))
                        .stdout_to(tether::Stdio::null())
                        .stderr_to(tether::Stdio::null())
                        .pass_fd(report->second.get(), tether::launch::kReportFd)
                        .pass_fd(dir.fd(), tether::launch::kStateFd)
                        .spawn();
    if (!launched) return report_error(launched.error());
    specs->first.reset();
    tether::PipeWriter to_launcher(std::move(specs->second), false);
    // It reads the whole launch before it does anything, so this does not
    // wait on anything but the pipe; a launcher that died early is EPIPE.
    if (auto w = to_launcher.write_all(tether::launch::encode_launch(batch)); !w) {
      fmt::print(stderr, "tether: {}: hand the specs to {}: {}\n", what, program,
                 w.error().message());
    }
    (void)to_launcher.close();
    if (starts.size() == 1) {
      starts[0].supervisor = launched->pid();
      launched->set_on_drop(tether::OnDrop::detach);  // it is the supervisor: it outlives us
    } else {
      launched->set_on_drop(tether::OnDrop::wait);  // it forks the supervisors and leaves
    }
    launchers.push_back(std::move(*launched));
  }
  report->second.reset();

  // Every answer, or the deadline, or the end of the pipe (all have closed it).
  auto deadline = seconds(timeout);
  std::size_t pending = starts.size();
  bool timed_out = false;
  tether::LineReader lines(tether::launch::kMaxLaunch);
  tether::PipeReader reader(std::move(report->first));
  while (pending > 0) {
    std::byte chunk[4096];
    auto n = reader.read(chunk, deadline);
    if (!n) {
      timed_out = n.error() == std::errc::timed_out;
      break;
    }
    if (*n == 0) break;
    lines.feed(std::string_view(reinterpret_cast<const char*>(chunk), *n));
    while (auto line = lines.next()) {
      auto r = tether::launch::decode_report(line->text);
      if (!r) continue;    // not ours to trust: ignored
      if (r->id == "-") {  // the launcher itself failed: it speaks for every spec
        for (auto& st : starts) {
          if (!st.answered) st.error = r->text, st.answered = true, --pending;
        }
        continue;
      }
      auto it = by_id.find(r->id);
      if (it == by_id.end()) continue;
      Start& st = *it->second;
      if (r->kind == tether::launch::Report::Kind::forked) {  // may come after its own answer
        st.supervisor = r->supervisor;
        continue;
      }
      if (st.answered) continue;
      st.answered = true;
      --pending;
      if (r->kind == tether::launch::Report::Kind::ok) {
        st.worker = r->worker;
        st.supervisor = r->supervisor;
      } else {
        st.error = r->text;
      }
    }
  }
  bool all_ok = std::all_of(starts.begin(), starts.end(),
                            [](const Start& st) { return st.answered && st.error.empty(); });
  if (!all_ok) {
    // All or nothing: every supervisor is stopped again (SIGTERM to a
    // supervisor is `exit`: its worker goes, its directory goes), then waited
    // for; every failure is explained.
    std::vector<tether::Pidfd> stopping;
    for (auto& st : starts) {
      if (st.answered && !st.error.empty()) {
        fmt::print(stderr, "tether: {} {}: {}\n", what, st.spec.name, st.error);
      } else if (!st.answered && timed_out) {
        fmt::print(stderr, "tether: {} {}: the worker was not {} within {} s (stopped it)\n", what,
                   st.spec.name, st.spec.wait_ready ? "ready" : "running", timeout);
      } else if (!st.answered) {
        fmt::print(stderr,
                   "tether: {} {}: its supervisor ended before answering (see its log, if "
                   "any, under {})\n",
                   what, st.spec.name, dir.path().string());
      }
      if (st.supervisor > 0) {
        // SIGTERM to a supervisor is `exit`: its worker goes, its directory goes.
        if (auto p = tether::Pidfd::open(st.supervisor); p && p->send_signal(SIGTERM)) {
          stopping.push_back(std::move(*p));
        }
      }
    }
    for (auto& p : stopping) (void)p.wait_ended(30s, "supervisor");
    return timed_out ? 5 : 1;
  }
  return 0;
}

namespace {

// ---------------------------------------------------------------- open

int do_open() {
  auto dir = state_dir(true);
  if (!dir) return report_error(dir.error());
  tether::SupervisorSpec spec;
  spec.id = new_id();
  bool demo = opt.command.empty();
  if (demo) {
    spec.command = {self_exe(), "_demo-worker"};
    if (opt.non_blocking) {
      spec.command.push_back("--poll-interval");
      spec.command.push_back(fmt::format("{}", opt.poll_interval));
    }
  } else {
    spec.command = opt.command;
  }
  // A name given with --name is claimed (unique among live workers, made
  // atomically by the supervisors); a default one only describes.
  bool named = open_cmd->count("--name") > 0;
  if (named) {
    std::string check = opt.count > 1 ? opt.name + "-1" : opt.name;
    if (auto why = tether::check_worker_name(check); !why.empty()) {
      fmt::print(stderr, "tether: open: bad worker name '{}': {}\n", opt.name, why);
      return 2;
    }
    spec.name = opt.name;
  } else {
    std::string base = demo ? "demo" : fs::path(opt.command.front()).filename().string();
    // Keep what is printable and allowed, so a program's odd file name
    // never reaches a terminal through `tether list`.
    for (char c : base) {
      spec.name += tether::check_worker_name(std::string(1, c == '.' ? '_' : c)).empty() ? c : '_';
    }
    if (spec.name.size() > 48) spec.name.resize(48);
    if (!tether::check_worker_name(spec.name).empty()) spec.name = "worker";
  }
  spec.unique_name = named;
  spec.restart = *tether::parse_restart_policy(opt.restart);
  spec.max_restarts = opt.max_restarts;
  spec.grace = std::chrono::milliseconds(static_cast<long>(opt.grace * 1000));
  spec.wait_ready = opt.wait_ready;
  spec.tty = opt.tty;
  spec.start_down = opt.start_down;
  spec.dir_check = std::chrono::milliseconds(static_cast<long>(opt.check_interval * 1000));
  spec.ready_fd = opt.ready_fd;
  spec.log_max_bytes = opt.log_size;
  spec.log_keep = opt.log_keep;
  if (!opt.max_memory.empty()) spec.memory_limit = *tether::parse_byte_size(opt.max_memory);
  spec.memory_check = std::max(
      std::chrono::milliseconds(10),
      std::chrono::milliseconds(static_cast<long>(std::lround(opt.memory_interval * 1000))));
  if (!opt.cwd.empty()) spec.cwd = fs::absolute(opt.cwd).lexically_normal();
  for (const auto& e : opt.env) {
    auto eq = e.find('=');
    if (eq == std::string::npos || eq == 0) {
      fmt::print(stderr, "tether: open: --env wants NAME=VALUE, not '{}'\n", e);
      return 2;
    }
    spec.env.emplace_back(e.substr(0, eq), e.substr(eq + 1));
  }
  // Specs travel as JSON: a word that is not UTF-8 is refused here, whole,
  // rather than changed on its way.
  if (auto bad = tether::launch::spec_problem(spec); !bad.empty()) {
    fmt::print(stderr, "tether: open: {} is not valid UTF-8 (refused)\n", bad);
    return 2;
  }
  // --count N: N workers NAME-1 … NAME-N, all or none (as supervisord's numprocs).
  std::vector<Start> starts(static_cast<std::size_t>(opt.count));
  for (int i = 0; i < opt.count; ++i) {
    Start& st = starts[static_cast<std::size_t>(i)];
    st.spec = spec;
    if (opt.count > 1) {
      st.spec.id = new_id();
      st.spec.name = fmt::format("{}-{}", spec.name, i + 1);
    }
  }
  if (int rc = start_specs(*dir, starts, opt.timeout, "open"); rc != 0) return rc;
  json out = json::array();
  for (auto& st : starts) {
    fs::path wdir = dir->worker_path(st.spec.id);
    if (opt.json_out) {
      out.push_back({{"id", st.spec.id},
                     {"name", st.spec.name},
                     {"pid", st.worker},
                     {"supervisor_pid", st.supervisor},
                     {"dir", wdir.string()}});
    } else {
      fmt::print("started worker {} (name {}), {}; control FIFO {}\n", st.spec.id, st.spec.name,
                 st.worker > 0 ? fmt::format("pid {}", st.worker) : std::string("down"),
                 (wdir / "control").string());
    }
  }
  if (opt.json_out) fmt::print("{}\n", opt.count == 1 ? out[0].dump() : out.dump());
  return 0;
}

// ---------------------------------------------------------------- list, status

int do_list() {
  auto dir = state_dir(false);
  std::vector<tether::WorkerInfo> workers;
  if (dir) {
    auto all = tether::list_workers(*dir);
    if (!all) return report_error(all.error());
    // A malformed record is reported and skipped, never fatal.
    for (const auto& e : all->skipped)
      fmt::print(stderr, "tether: list: skipped {}\n", e.message());
    workers = std::move(all->workers);
    if (opt.prune) {
      if (auto n = tether::prune_leftovers(*dir); n && *n > 0) {
        fmt::print(stderr, "pruned {} leftover(s) of supervisors that died starting or exiting\n",
                   *n);
      }
    }
  } else if (dir.error() != std::errc::no_such_file_or_directory) {
    return report_error(dir.error());
  }
  if (opt.prune) {
    std::erase_if(workers, [](const tether::WorkerInfo& w) {
      if (w.supervisor_alive) return false;
      if (auto r = tether::prune_worker(w); !r) {
        fmt::print(stderr, "tether: prune {}: {}\n", who(w), r.error().message());
        return false;
      }
      fmt::print(stderr, "pruned {} (its supervisor was dead)\n", who(w));
      return true;
    });
  }
  if (opt.json_out) {
    json pids = json::object(), list = json::array();
    auto usage = tether::worker_usage(workers);
    for (std::size_t i = 0; i < workers.size(); ++i) {
      const auto& w = workers[i];
      if (w.pid > 0 && w.supervisor_alive) pids[std::to_string(w.pid)] = w.id;
      list.push_back(to_json(w));
      add_usage(list.back(), usage[i]);
    }
    fmt::print("{}\n", json({{"pids", pids}, {"workers", list}}).dump());
    return 0;
  }
  if (workers.empty()) {
    fmt::print("no workers\n");
    return 0;
  }
  // CPU over each worker's uptime, as ps's %CPU; RSS and PSS of the worker
  // and what it started (worker_usage).
  auto usage = tether::worker_usage(workers);
  fmt::print("{:<9} {:<16} {:>7} {:<15} {:>7} {:>8} {:>5} {:>6} {:>6}  {:<22} {}\n", "ID", "NAME",
             "PID", "STATE", "UPTIME", "RESTARTS", "CPU%", "RSS", "PSS", "LAST EXIT", "COMMAND");
  for (std::size_t i = 0; i < workers.size(); ++i) {
    const auto& w = workers[i];
    const auto& u = usage[i];
    fmt::print("{:<9} {:<16} {:>7} {:<15} {:>7} {:>8} {:>5} {:>6} {:>6}  {:<22} {}\n",
               printable(w.id), printable(w.name), w.pid > 0 ? std::to_string(w.pid) : "-",
               tether::to_string(w.state), uptime(w), w.restarts,
               u ? fmt::format("{:.1f}", u->cpu_percent) : "-", u ? bytes_shown(u->rss_bytes) : "-",
               u ? bytes_shown(u->pss_bytes) : "-", w.last_exit().empty() ? "-" : w.last_exit(),
               printable(join(w.command)));
  }
  return 0;
}

tether::Result<tether::WorkerInfo> find(const std::string& key) {
  auto dir = state_dir(false);
  if (!dir) {
    if (dir.error() == std::errc::no_such_file_or_directory) {
      return tether::fail(tether::errc::no_such_worker,
                          fmt::format("no worker '{}' (no worker was ever started)", key));
    }
    return std::unexpected(dir.error());
  }
  return tether::find_worker(*dir, key);
}

int do_status() {
  auto w = find(opt.key);
  if (!w) return report_error(w.error());
  auto u = tether::worker_usage({*w})[0];
  // The memory limit is the spec's (a worker started before it existed
  // has none).
  auto spec = tether::read_worker_spec(*w);
  std::uint64_t limit = spec ? spec->memory_limit : 0;
  if (opt.json_out) {
    json j = to_json(*w);
    add_usage(j, u);
    j["memory_limit_bytes"] = limit;
    fmt::print("{}\n", j.dump());
    return 0;
  }
  std::string used = "-";
  if (u) {
    used = fmt::format("cpu {:.1f}% ({:.2f} s), rss {}, pss {}, {} process{}", u->cpu_percent,
                       static_cast<double>(u->cpu.count()) / 1000.0, bytes_shown(u->rss_bytes),
                       bytes_shown(u->pss_bytes), u->processes, u->processes == 1 ? "" : "es");
  }
  if (limit > 0) {
    used += fmt::format(" (limit {}, checked every {} ms)", bytes_shown(limit),
                        spec->memory_check.count());
  }
  fmt::print(
      "worker {}\n  state      {} (wants {})\n  pid        {}\n  supervisor {}\n  uptime     "
      "{}\n  restarts   {} (policy {})\n  last exit  {}\n  uses       {}\n  command    {}\n"
      "  directory  {}\n",
      printable(who(*w)), tether::to_string(w->state), tether::to_string(w->want),
      w->pid > 0 ? std::to_string(w->pid) : "-",
      w->supervisor_alive ? std::to_string(w->supervisor_pid) : "dead", uptime(*w), w->restarts,
      tether::to_string(w->restart_policy), w->last_exit().empty() ? "-" : w->last_exit(), used,
      printable(join(w->command)), printable(w->dir.string()));
  return 0;
}

// ---------------------------------------------------------------- commands

// The workers KEYS name: each a pid, id or name, or a set's name (its
// workers, when no worker is called that), or `all` (every live one).
// Duplicates are dropped; an unknown key is an error before anything is
// sent.
tether::Result<std::vector<tether::WorkerInfo>> resolve(const std::vector<std::string>& keys) {
  std::vector<tether::WorkerInfo> out;
  std::optional<std::vector<tether::WorkerInfo>> live;
  auto all_live = [&]() -> tether::Result<void> {
    if (live) return {};
    live.emplace();
    auto dir = state_dir(false);
    if (!dir) {
      if (dir.error() == std::errc::no_such_file_or_directory) return {};
      return std::unexpected(dir.error());
    }
    auto all = tether::list_workers(*dir);
    if (!all) return std::unexpected(all.error());
    for (auto& w : all->workers) {
      if (w.supervisor_alive && w.state != tether::WorkerState::exited) live->push_back(w);
    }
    return {};
  };
  auto add = [&](const tether::WorkerInfo& w) {
    if (std::none_of(out.begin(), out.end(), [&](const auto& o) { return o.id == w.id; })) {
      out.push_back(w);
    }
  };
  for (const auto& key : keys) {
    if (key == "all") {
      if (auto r = all_live(); !r) return std::unexpected(r.error());
      for (const auto& w : *live) add(w);
      continue;
    }
    auto w = find(key);
    if (w) {
      add(*w);
      continue;
    }
    if (w.error() != tether::errc::no_such_worker) return std::unexpected(w.error());
    if (auto r = all_live(); !r) return std::unexpected(r.error());
    bool any = false;
    for (const auto& l : *live) {
      if (l.set == key) add(l), any = true;
    }
    if (!any) return std::unexpected(w.error());
  }
  return out;
}

int exit_one(const tether::WorkerInfo& w) {
  if (auto r = tether::exit_worker(w, seconds(opt.timeout), !opt.no_wait); !r) {
    return report_error(r.error());
  }
  if (!opt.no_wait) fmt::print("worker {} has exited\n", who(w));
  return 0;
}

int do_exit() {
  auto ws = resolve(opt.keys);
  if (!ws) return report_error(ws.error());
  if (ws->size() == 1) return exit_one(ws->front());
  // Several: all at once (a thread each, 64 at a time), each waited for.
  std::vector<std::optional<tether::Error>> errors(ws->size());
  constexpr std::size_t kAtOnce = 64;
  for (std::size_t first = 0; first < ws->size(); first += kAtOnce) {
    std::vector<std::thread> threads;
    for (std::size_t i = first; i < std::min(ws->size(), first + kAtOnce); ++i) {
      threads.emplace_back([&, i] {
        auto r = tether::exit_worker((*ws)[i], seconds(opt.timeout), !opt.no_wait);
        if (!r && r.error() != tether::errc::no_such_worker) errors[i] = r.error();
      });
    }
    for (auto& t : threads) t.join();
  }
  int rc = 0;
  for (std::size_t i = 0; i < ws->size(); ++i) {
    if (errors[i]) {
      int code = report_error(*errors[i]);  // said here, in order
      if (rc == 0) rc = code;
    } else if (!opt.no_wait) {
      fmt::print("worker {} has exited\n", who((*ws)[i]));
    }
  }
  if (ws->empty()) fmt::print("no workers\n");
  return rc;
}

int updown_one(const tether::WorkerInfo& w, const char* command, tether::WorkerState state,
               bool restart) {
  if (auto r = tether::send_command(w, command); !r) return report_error(r.error());
  if (opt.no_wait) return 0;
  // Its effect: a state read before the supervisor acted on this command
  // (another client's stop still in the FIFO) does not count.
  auto now =
      tether::wait_worker_state(w, state, seconds(opt.timeout), restart ? w.pid : 0, w.commands);
  if (!now) return report_error(now.error());
  if (now->pid > 0) {
    fmt::print("worker {} is {}, pid {}\n", who(*now), tether::to_string(now->state), now->pid);
  } else {
    fmt::print("worker {} is {}\n", who(*now), tether::to_string(now->state));
  }
  return 0;
}

int do_updown(const char* command, tether::WorkerState state, bool restart) {
  auto ws = resolve(opt.keys);
  if (!ws) return report_error(ws.error());
  // Several: the command goes to each, then each is waited for, so they
  // stop (or start) together; the first failure's code is returned.
  int rc = 0;
  if (ws->size() > 1 && !opt.no_wait) {
    std::vector<bool> sent(ws->size());
    for (std::size_t i = 0; i < ws->size(); ++i) {
      auto r = tether::send_command((*ws)[i], command);
      sent[i] = r.has_value();
      if (!r) {
        int code = report_error(r.error());
        if (rc == 0) rc = code;
      }
    }
    for (std::size_t i = 0; i < ws->size(); ++i) {
      if (!sent[i]) continue;
      const auto& w = (*ws)[i];
      auto now = tether::wait_worker_state(w, state, seconds(opt.timeout), restart ? w.pid : 0,
                                           w.commands);
      if (!now) {
        int code = report_error(now.error());
        if (rc == 0) rc = code;
        continue;
      }
      fmt::print("worker {} is {}{}\n", who(*now), tether::to_string(now->state),
                 now->pid > 0 ? fmt::format(", pid {}", now->pid) : "");
    }
    return rc;
  }
  for (const auto& w : *ws) {
    int code = updown_one(w, command, state, restart);
    if (rc == 0) rc = code;
  }
  if (ws->empty()) fmt::print("no workers\n");
  return rc;
}

int do_signal() {
  // Checked here, where a bad one can be refused with exit 2, not only by
  // the supervisor, which can only log it.
  opt.signal = opt.keys.back();
  opt.keys.pop_back();
  auto sig = tether::parse_signal(opt.signal);
  if (!sig) {
    fmt::print(stderr, "tether: signal: '{}' is not a signal (TERM, SIGHUP, 10, …)\n",
               printable(opt.signal));
    return 2;
  }
  // Every worker resolved before any is signalled.
  auto ws = resolve(opt.keys);
  if (!ws) return report_error(ws.error());
  int rc = 0;
  for (const auto& w : *ws) {
    if (auto r = tether::send_command(w, "signal " + std::to_string(*sig)); !r) {
      int code = report_error(r.error());
      if (rc == 0) rc = code;
    }
  }
  return rc;
}

int do_send() {
  auto w = find(opt.key);
  if (!w) return report_error(w.error());
  if (auto r = tether::send_command(*w, "send " + join(opt.words)); !r) {
    return report_error(r.error());
  }
  return 0;
}

// ---------------------------------------------------------------- logs

// ---------------------------------------------------------------- merged logs

// Several workers' logs as one, in time order (every log line starts with
// its UTC timestamp, so the text sorts as the time does), each line
// prefixed with its worker's name: in a colour of its own on a terminal
// (unless NO_COLOR is set), plain when piped. -f follows them all, woken
// by inotify on their directories, until every one has gone.
struct Followed {
  tether::WorkerInfo info;
  tether::Fd dir;
  std::FILE* file = nullptr;
  ino_t inode = 0;
  std::string prefix;
  std::string partial;  // a line whose end has not been written yet
  std::string last_time;
};

// "2026-12-03T11:59:55.716Z": the timestamp a log line starts with, or "".
std::string_view line_time(std::string_view line) {
  if (line.size() >= 24 && line[4] == '-' && line[10] == 'T' && line[23] == 'Z') {
    return line.substr(0, 24);
  }
  return {};
}

// After a rotation, maybe more than one since we looked (a busy worker, a
// small --log-size): the file we were reading (`ours`) is now
// worker.log.K, and .K-1 ... .1 hold what came between. Their names,
// oldest first, to be read before the new worker.log. If ours has fallen
// off the kept ones, every kept one (what fell off with it is lost, as
// with tail -F).
std::vector<std::string> rotated_since(int dirfd, const struct stat& ours) {
  int found = 0, kept = 0;
  for (int k = 1; k <= 1000; ++k) {
    struct stat old {};
    if (::fstatat(dirfd, fmt::format("worker.log.{}", k).c_str(), &old, AT_SYMLINK_NOFOLLOW) != 0) {
      break;
    }
    kept = k;
    if (old.st_ino == ours.st_ino && old.st_dev == ours.st_dev) {
      found = k;
      break;
    }
  }
  std::vector<std::string> names;
  for (int k = found > 0 ? found - 1 : kept; k >= 1; --k)
    names.push_back(fmt::format("worker.log.{}", k));
  return names;
}

int merged_logs(std::vector<tether::WorkerInfo> workers) {
  const bool colour = ::isatty(STDOUT_FILENO) == 1 && std::getenv("NO_COLOR") == nullptr;
  std::size_t width = 0;
  for (const auto& w : workers) width = std::max(width, printable(w.name).size());
  static constexpr int kColours[] = {36, 33, 32, 35, 34, 31, 96, 93, 92, 95, 94, 91};
  std::vector<Followed> logs;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    Followed f;
    f.info = workers[i];
    auto dir = tether::open_worker_directory(f.info);
    if (!dir) continue;  // gone meanwhile
    f.dir = std::move(*dir);
    auto name = fmt::format("{:<{}} |", printable(f.info.name), width);
    f.prefix = colour ? fmt::format("\x1b[{}m{}\x1b[0m ", kColours[i % std::size(kColours)], name)
                      : name + " ";
    if (auto fd = tether::open_worker_file(f.info, "worker.log"); fd) {
      struct stat st {};
      ::fstat(fd->get(), &st);
      f.inode = st.st_ino;
      f.file = ::fdopen(fd->release(), "re");
    }
    logs.push_back(std::move(f));
  }
  struct Line {
    std::string time;
    std::size_t log;
    std::string text;
  };
  // The complete lines each log has now; a line without a timestamp of its
  // own (none should be) sorts with the one before it.
  auto read_lines = [&](std::size_t i, std::vector<Line>& out) {
    auto& f = logs[i];
    if (f.file == nullptr) return;
    std::clearerr(f.file);
    char* buf = nullptr;
    std::size_t cap = 0;
    ssize_t len;
    while ((len = ::getline(&buf, &cap, f.file)) > 0) {
      f.partial.append(buf, static_cast<std::size_t>(len));
      if (f.partial.back() != '\n') continue;
      auto t = line_time(f.partial);
      if (!t.empty()) f.last_time = std::string(t);
      out.push_back({f.last_time, i, std::move(f.partial)});
      f.partial.clear();
    }
    std::free(buf);
  };
  auto print = [&](std::vector<Line>& lines, std::size_t keep) {
    std::stable_sort(lines.begin(), lines.end(),
                     [](const Line& a, const Line& b) { return a.time < b.time; });
    std::size_t first = lines.size() > keep ? lines.size() - keep : 0;
    for (std::size_t k = first; k < lines.size(); ++k) {
      std::fputs(logs[lines[k].log].prefix.c_str(), stdout);
      std::fputs(lines[k].text.c_str(), stdout);
    }
    std::fflush(stdout);
  };
  std::vector<Line> lines;
  for (std::size_t i = 0; i < logs.size(); ++i) read_lines(i, lines);
  print(lines, opt.lines < 0 ? lines.size() : static_cast<std::size_t>(opt.lines));
  if (!opt.follow) {
    for (auto& f : logs) {
      if (f.file) std::fclose(f.file);
    }
    return 0;
  }
  tether::Fd in(::inotify_init1(IN_CLOEXEC));
  std::map<int, std::size_t> by_watch;
  for (std::size_t i = 0; i < logs.size(); ++i) {
    int wd =
        ::inotify_add_watch(in.get(), fmt::format("/proc/self/fd/{}", logs[i].dir.get()).c_str(),
                            IN_MODIFY | IN_CREATE | IN_MOVE_SELF | IN_DELETE_SELF);
    if (wd >= 0) by_watch[wd] = i;
  }
  std::size_t alive = by_watch.size();
  while (alive > 0) {
    alignas(inotify_event) char buf[4096];
    ssize_t n = ::read(in.get(), buf, sizeof buf);
    if (n <= 0) break;
    std::set<std::size_t> touched, gone;
    for (ssize_t at = 0; at < n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + at);
      if (auto it = by_watch.find(ev->wd); it != by_watch.end()) {
        touched.insert(it->second);
        if ((ev->mask & (IN_MOVE_SELF | IN_DELETE_SELF | IN_IGNORED)) != 0) gone.insert(it->second);
      }
      at += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
    }
    std::vector<Line> fresh;
    for (auto i : touched) {
      auto& f = logs[i];
      read_lines(i, fresh);
      // Rotated: what is left of the old file was read; the new one next.
      struct stat now {};
      if (!gone.contains(i) &&
          ::fstatat(f.dir.get(), "worker.log", &now, AT_SYMLINK_NOFOLLOW) == 0 &&
          now.st_ino != f.inode) {
        struct stat ours {};
        bool known = f.file != nullptr && ::fstat(fileno(f.file), &ours) == 0;
        if (f.file) std::fclose(f.file);
        f.file = nullptr;
        // The files rotated between ours and the new one, oldest first.
        for (const auto& name :
             known ? rotated_since(f.dir.get(), ours) : std::vector<std::string>{}) {
          if (auto mid = tether::open_worker_file(f.info, name); mid) {
            f.file = ::fdopen(mid->release(), "re");
            read_lines(i, fresh);
            if (f.file) std::fclose(f.file);
            f.file = nullptr;
          }
        }
        if (auto fd = tether::open_worker_file(f.info, "worker.log"); fd) {
          f.inode = now.st_ino;
          f.file = ::fdopen(fd->release(), "re");
          read_lines(i, fresh);
        }
      }
    }
    print(fresh, fresh.size());
    for (auto i : gone) {
      for (auto it = by_watch.begin(); it != by_watch.end(); ++it) {
        if (it->second == i) {
          by_watch.erase(it);
          --alive;
          break;
        }
      }
    }
  }
  for (auto& f : logs) {
    if (f.file) std::fclose(f.file);
  }
  return 0;
}

int do_logs() {
  // No worker, several, a set's name or all: merged. One: its log alone.
  bool one = opt.keys.size() == 1 && opt.keys[0] != "all";
  std::optional<tether::WorkerInfo> single;
  if (one) {
    auto w = find(opt.keys[0]);
    if (w) {
      single = std::move(*w);
    } else if (w.error() != tether::errc::no_such_worker) {
      return report_error(w.error());
    }
  }
  if (!single) {
    auto ws = resolve(opt.keys.empty() ? std::vector<std::string>{"all"} : opt.keys);
    if (!ws) return report_error(ws.error());
    if (ws->empty()) {
      fmt::print("no workers\n");
      return 0;
    }
    return merged_logs(std::move(*ws));
  }
  auto w = tether::Result<tether::WorkerInfo>(std::move(*single));
  // Through the worker's directory as listed, never by its path again.
  auto dirfd = tether::open_worker_directory(*w);
  if (!dirfd) return report_error(dirfd.error());
  auto open_log = [&]() -> std::FILE* {
    auto fd = tether::open_worker_file(*w, "worker.log");
    if (!fd) return nullptr;
    return ::fdopen(fd->release(), "re");
  };
  std::FILE* f = open_log();
  if (!f) {
    return report_error(tether::Error::from_errno(errno, "open " + w->log_path().string()));
  }
  std::deque<std::string> last;
  char* line = nullptr;
  std::size_t cap = 0;
  ssize_t len;
  while ((len = ::getline(&line, &cap, f)) > 0) {
    last.emplace_back(line, static_cast<std::size_t>(len));
    if (opt.lines >= 0 && last.size() > static_cast<std::size_t>(opt.lines)) last.pop_front();
  }
  for (const auto& l : last) std::fputs(l.c_str(), stdout);
  std::fflush(stdout);
  if (!opt.follow) {
    std::free(line);
    std::fclose(f);
    return 0;
  }
  // Follow: woken by inotify when the log grows or is rotated, until the
  // worker's directory goes (its supervisor renames it away, then removes it).
  tether::Fd in(::inotify_init1(IN_CLOEXEC));
  ::inotify_add_watch(in.get(), fmt::format("/proc/self/fd/{}", dirfd->get()).c_str(),
                      IN_MODIFY | IN_CREATE | IN_DELETE | IN_MOVE_SELF | IN_DELETE_SELF);
  struct stat st {};
  ::fstat(fileno(f), &st);
  auto drain = [&] {
    std::clearerr(f);
    while ((len = ::getline(&line, &cap, f)) > 0) {
      std::fwrite(line, 1, static_cast<std::size_t>(len), stdout);
    }
    std::fflush(stdout);
  };
  for (;;) {
    drain();
    struct stat now {};
    if (::fstatat(dirfd->get(), "worker.log", &now, AT_SYMLINK_NOFOLLOW) != 0) {
      // Between two steps of a rotation (renamed to .1, not yet created
      // again), or the directory being removed: only the second ends the
      // follow, and the lock going with it tells it apart.
      struct stat lock {};
      if (::fstatat(dirfd->get(), "lock", &lock, AT_SYMLINK_NOFOLLOW) != 0) break;
    } else if (now.st_ino != st.st_ino) {  // rotated: the rest of the old file, then the new
      drain();
      std::fclose(f);
      for (const auto& name : rotated_since(dirfd->get(), st)) {
        if (auto mid = tether::open_worker_file(*w, name); mid) {
          if ((f = ::fdopen(mid->release(), "re"))) {
            drain();
            std::fclose(f);
          }
        }
      }
      f = open_log();
      if (!f) break;
      ::fstat(fileno(f), &st);
      continue;
    }
    // Woken by the next change; the directory moved away (its supervisor
    // exiting renames it, then removes it) or removed ends the follow.
    alignas(inotify_event) char buf[4096];
    ssize_t n = ::read(in.get(), buf, sizeof buf);
    if (n <= 0) break;
    bool gone = false;
    for (ssize_t at = 0; at < n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + at);
      gone = gone || (ev->mask & (IN_MOVE_SELF | IN_DELETE_SELF | IN_IGNORED)) != 0;
      at += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
    }
    if (gone) {
      drain();
      break;
    }
  }
  std::free(line);
  if (f) std::fclose(f);
  return 0;
}

// ---------------------------------------------------------------- hidden entry points

int do_demo_worker() {
  std::optional<std::chrono::milliseconds> interval;
  if (opt.poll_interval > 0 && demo_worker_cmd->count("--poll-interval")) {
    interval = std::chrono::milliseconds(static_cast<long>(opt.poll_interval * 1000));
  }
  return run_demo_worker(interval);
}

CLI::App* with_key(CLI::App* cmd) {
  cmd->add_option("worker", opt.key, "The worker: its pid, id or name")->required();
  return cmd;
}

CLI::App* with_keys(CLI::App* cmd) {
  cmd->add_option("workers", opt.keys, "The workers: pids, ids or names; a set's name; or all")
      ->required();
  return cmd;
}

CLI::App* with_wait(CLI::App* cmd) {
  cmd->add_flag("--no-wait", opt.no_wait, "Return once the command is delivered");
  cmd->add_option("--timeout", opt.timeout, "Seconds to wait for the effect (default 10)")
      ->check(positive_seconds());
  return cmd;
}

}  // namespace

// A number of seconds: positive and finite (CLI::Range lets NaN through,
// and 0 or a negative number must not mean "no limit" by accident).
CLI::Validator positive_seconds(double max, bool zero_too) {
  return CLI::Validator(
      [max, zero_too](std::string& text) -> std::string {
        double v = 0;
        try {
          std::size_t used = 0;
          v = std::stod(text, &used);
          if (used != text.size()) return "not a number of seconds: " + text;
        } catch (...) {
          return "not a number of seconds: " + text;
        }
        if (!std::isfinite(v) || v < 0 || (v == 0 && !zero_too) || v > max) {
          return fmt::format("{} is not a number of seconds in {}0, {:g}]", text,
                             zero_too ? "[" : "(", max);
        }
        return "";
      },
      "SECONDS>0");
}

CLI::App* add_run_command(CLI::App& app, RunOptions& into) {
  auto* cmd = app.add_subcommand("run", "Run a command, report how it ended and what it used");
  cmd->add_option("--timeout", into.timeout_s,
                  "Terminate it after this many seconds (SIGTERM, then SIGKILL)");
  cmd->add_flag("-v,--verbose", into.verbose, "Print the exact exit status and resource usage");
  cmd->add_option("command", into.argv, "The command and its arguments (after --)")->required();
  return cmd;
}

void add_worker_commands(CLI::App& app) {
  open_cmd =
      app.add_subcommand("open", "Start a worker under its own supervisor, in the background");
  open_cmd->add_option("--name", opt.name, "A name for the worker (default: the program's)");
  open_cmd->add_flag("--non-blocking", opt.non_blocking,
                     "Demo worker: poll the input instead of blocking on it");
  open_cmd
      ->add_option("--poll-interval", opt.poll_interval,
                   "Demo worker: seconds between polls (default 1)")
      ->check(positive_seconds(3600.0));
  open_cmd->add_option("--restart", opt.restart, "always, on-failure (default) or never")
      ->check(CLI::IsMember({"always", "on-failure", "never"}));
  open_cmd->add_option("--max-restarts", opt.max_restarts, "Give up after this many restarts")
      ->check(CLI::Range(-1, 1 << 30));
  open_cmd->add_option("--env", opt.env, "NAME=VALUE for the worker's environment (repeatable)");
  open_cmd->add_option("--cwd", opt.cwd, "The worker's working directory")
      ->check(CLI::ExistingDirectory);
  open_cmd
      ->add_option("--check-interval", opt.check_interval,
                   "Seconds between checks that the worker's directory was not moved away "
                   "(default 60)")
      ->check(positive_seconds(86400.0));
  open_cmd->add_flag("--tty", opt.tty,
                     "Run the worker on a pseudo-terminal (for programs that buffer or "
                     "behave otherwise when not on a terminal)");
  open_cmd->add_flag("--down", opt.start_down,
                     "Start the supervisor with the worker down (`tether start` brings it up)");
  open_cmd->add_flag("--wait-ready", opt.wait_ready,
                     "Return once the worker writes a line on fd $TETHER_READY_FD");
  open_cmd->add_option("--ready-fd", opt.ready_fd, "The readiness fd number (default 3)")
      ->check(CLI::Range(3, 1023));
  open_cmd->add_option("--grace", opt.grace, "Seconds from SIGTERM to SIGKILL on stop (default 5)")
      ->check(positive_seconds(3600.0, true));
  open_cmd
      ->add_option("--log-size", opt.log_size,
                   "Rotate the log at this many bytes (default 1 MiB; at least 4096)")
      ->check(CLI::Range(4096.0, 1e12));
  open_cmd->add_option("--log-keep", opt.log_keep, "Rotated logs to keep (default 3)")
      ->check(CLI::Range(0, 100));
  open_cmd
      ->add_option("--max-memory", opt.max_memory,
                   "Restart the worker when it and its processes hold more resident memory "
                   "than this (\"512M\", \"2G\"; at least 1M)")
      ->check(CLI::Validator(
          [](const std::string& v) -> std::string {
            auto b = tether::parse_byte_size(v);
            if (!b) return "not a size: " + v + " (512M, 2G, 1048576)";
            if (*b < (1u << 20) || *b > (std::uint64_t{1} << 50)) return "from 1M to 1P";
            return "";
          },
          "SIZE"));
  open_cmd
      ->add_option("--memory-interval", opt.memory_interval,
                   "Seconds between checks of --max-memory (default 1)")
      ->check(positive_seconds(3600.0));
  open_cmd->add_option("--timeout", opt.timeout, "Seconds to wait for the start (default 10)")
      ->check(positive_seconds(86400.0));
  open_cmd->add_option("--count", opt.count, "Start N workers, NAME-1 … NAME-N (all or none)")
      ->check(CLI::Range(1, 10000));
  open_cmd->add_flag("--json", opt.json_out, "Print id, name, pid as JSON (an array with --count)");
  open_cmd->add_option("command", opt.command,
                       "The command to run (after --); default: a demo worker");

  list_cmd = app.add_subcommand("list", "List the workers");
  list_cmd->add_flag("--json", opt.json_out, "JSON, with the {pid: id} mapping");
  list_cmd->add_flag("--prune", opt.prune, "Remove workers whose supervisor is dead");

  status_cmd = with_key(app.add_subcommand("status", "Show one worker"));
  status_cmd->add_flag("--json", opt.json_out, "JSON");

  exit_cmd = with_wait(with_keys(app.add_subcommand("exit", "Stop workers and their supervisors")));
  stop_cmd = with_wait(
      with_keys(app.add_subcommand("stop", "Take workers down (their supervisors stay)")));
  start_cmd = with_wait(with_keys(app.add_subcommand("start", "Bring stopped workers up")));
  restart_cmd =
      with_wait(with_keys(app.add_subcommand("restart", "Stop workers and start them again")));
  restart_cmd->add_flag("--rolling", opt.rolling,
                        "The instances of a set's definition (or a set's workers), one at a "
                        "time, each up again before the next");

  // WORKER… SIGNAL: the last word is the signal (the one-worker form came
  // first, and stays as it was).
  signal_cmd = app.add_subcommand("signal", "Send a signal to workers' process groups");
  signal_cmd
      ->add_option("workers", opt.keys,
                   "The workers (pids, ids or names; a set's name; or all), then the signal: "
                   "TERM, SIGHUP, 10, …")
      ->required()
      ->expected(2, 1 << 20);

  send_cmd = with_key(app.add_subcommand("send", "Deliver a line to a worker's standard input"));
  send_cmd->add_option("message", opt.words, "The message")->required();

  logs_cmd = app.add_subcommand("logs", "Show a worker's log, or several merged in time order");
  logs_cmd->add_option("workers", opt.keys,
                       "The workers (pids, ids or names; a set's name; default: all)");
  logs_cmd->add_flag("-f,--follow", opt.follow, "Keep printing as the log grows");
  logs_cmd->add_option("-n,--lines", opt.lines, "Lines to show (default 20; -1: all)");

  demo_worker_cmd = app.add_subcommand("_demo-worker", "")->group("");  // hidden
  demo_worker_cmd->add_option("--poll-interval", opt.poll_interval)
      ->check(positive_seconds(3600.0));
}

int run_workers() {
  if (*open_cmd) return do_open();
  if (*list_cmd) return do_list();
  if (*status_cmd) return do_status();
  if (*exit_cmd) return do_exit();
  if (*stop_cmd) return do_updown("stop", tether::WorkerState::down, false);
  if (*start_cmd) return do_updown("start", tether::WorkerState::up, false);
  if (*restart_cmd && opt.rolling) {
    if (opt.keys.size() != 1) {
      fmt::print(stderr, "tether: restart --rolling takes one definition or set\n");
      return 2;
    }
    return rolling_restart(opt.keys.front(), opt.timeout);
  }
  if (*restart_cmd) return do_updown("restart", tether::WorkerState::up, true);
  if (*signal_cmd) return do_signal();
  if (*send_cmd) return do_send();
  if (*logs_cmd) return do_logs();
  if (*demo_worker_cmd) return do_demo_worker();
  return -1;
}

}  // namespace tether_cli
