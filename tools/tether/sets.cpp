// tether up / down / scale: a set of workers described in a file
// (tether.toml or a Procfile; tether/supervise/file.hpp). No daemon: each
// worker is an ordinary worker with its own supervisor, labelled with its
// set and definition in its spec.json, which is what `up` compares with the
// file. See docs/supervisor.md.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "tether/supervise.hpp"
#include "tether/supervise/file.hpp"
#include "tether/supervise/launch.hpp"
#include "tether/supervise/saved.hpp"
#include "workers.hpp"

namespace tether_cli {

namespace {

namespace fs = std::filesystem;

struct SetOptions {
  std::string file;
  std::vector<std::string> names;
  double timeout = 30.0;
  bool no_deps = false;
};

SetOptions sopt;
CLI::App *up_cmd, *down_cmd, *scale_cmd;

constexpr int kBadFile = 6;

tether::Result<tether::SetDefinition> load() {
  return load_set(sopt.file);
}

// What of the set runs now is what `tether resurrect` will start after a
// reboot: recorded in the configuration directory (saved.hpp). The set
// runs either way; a record that cannot be written is said, not fatal.
void record(const tether::StateDir* dir, const std::string& set) {
  auto config = tether::ConfigDir::open_default(dir != nullptr);
  if (!config) {
    if (dir == nullptr && config.error() == std::errc::no_such_file_or_directory) return;
    fmt::print(stderr, "tether: warning: set {} is not recorded for `tether resurrect`: {}\n", set,
               config.error().message());
    return;
  }
  tether::Result<void> r;
  if (dir != nullptr) {
    if (auto n = tether::save_set(*config, *dir, set); !n) r = std::unexpected(n.error());
  } else {
    r = tether::update_saved(*config, [&](tether::SavedWorkers& saved) {
      std::erase_if(saved.workers, [&](const tether::SupervisorSpec& s) { return s.set == set; });
    });
  }
  if (!r) {
    fmt::print(stderr, "tether: warning: set {} is not recorded for `tether resurrect`: {}\n", set,
               r.error().message());
  }
}

bool same_spec(tether::SupervisorSpec a, tether::SupervisorSpec b) {
  a.id.clear();
  b.id.clear();
  a.start_down = b.start_down = false;  // how it was started, not what it runs
  return tether::launch::encode_spec(a) == tether::launch::encode_spec(b);
}

// A live worker of the set, with the spec it runs (when it could be read).
struct Member {
  tether::WorkerInfo info;
  std::optional<tether::SupervisorSpec> spec;
  std::string definition() const { return spec ? spec->definition : std::string(); }
};

struct Live {
  std::map<std::string, Member> members;             // the set's, by name
  std::map<std::string, tether::WorkerInfo> others;  // the rest, by name
};

tether::Result<Live> live_workers(const tether::StateDir& dir, const std::string& set) {
  auto all = tether::list_workers(dir);
  if (!all) return std::unexpected(all.error());
  Live live;
  for (auto& w : all->workers) {
    // A worker that ended and was not restarted (exited) is still the
    // set's: its supervisor holds the name, and up starts it again.
    if (!w.supervisor_alive || w.want == tether::Want::exit) continue;
    if (w.set == set) {
      Member m{w, std::nullopt};
      if (auto s = tether::read_worker_spec(w); s) m.spec = std::move(*s);
      live.members.emplace(w.name, std::move(m));
    } else {
      live.others.emplace(w.name, w);
    }
  }
  return live;
}

// Exits them all at once (a thread each, up to 64 at a time), each waited
// for; one already gone counts as exited. Returns how many failed.
int exit_all(const std::vector<tether::WorkerInfo>& workers, const char* what) {
  std::vector<std::string> errors(workers.size());
  constexpr std::size_t kAtOnce = 64;
  for (std::size_t first = 0; first < workers.size(); first += kAtOnce) {
    std::vector<std::thread> threads;
    for (std::size_t i = first; i < std::min(workers.size(), first + kAtOnce); ++i) {
      threads.emplace_back([&, i] {
        auto r = tether::exit_worker(workers[i],
                                     tether::Deadline(std::chrono::duration<double>(sopt.timeout)));
        if (!r && r.error() != tether::errc::no_such_worker) errors[i] = r.error().message();
      });
    }
    for (auto& t : threads) t.join();
  }
  int failed = 0;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    if (!errors[i].empty()) {
      fmt::print(stderr, "tether: {} {}: {}\n", what, workers[i].display_name(), errors[i]);
      ++failed;
    }
  }
  return failed;
}

// Its supervisor runs, its worker does not and will not by itself: taken
// down (tether stop, resurrected down), or ended and not restarted.
bool stays_down(const tether::WorkerInfo& w) {
  return w.state == tether::WorkerState::down || w.state == tether::WorkerState::exited;
}

// Starts workers whose supervisors run with the worker down: the command to
// each, then a wait for each to be up (ready, when it waits for readiness).
// The number that failed, each said.
int start_all(const std::vector<tether::WorkerInfo>& workers) {
  int failed = 0;
  std::vector<bool> sent(workers.size(), false);
  for (std::size_t i = 0; i < workers.size(); ++i) {
    if (auto r = tether::send_command(workers[i], "start"); !r) {
      fmt::print(stderr, "tether: up: start {}: {}\n", workers[i].display_name(),
                 r.error().message());
      ++failed;
      continue;
    }
    sent[i] = true;
  }
  auto deadline = tether::Deadline(std::chrono::duration<double>(sopt.timeout));
  for (std::size_t i = 0; i < workers.size(); ++i) {
    if (!sent[i]) continue;
    const auto& w = workers[i];
    auto now = tether::wait_worker_state(w, tether::WorkerState::up, deadline, 0, w.commands);
    if (!now) {
      fmt::print(stderr, "tether: up: start {}: {}\n", w.display_name(), now.error().message());
      ++failed;
      continue;
    }
    fmt::print("{:<20} started: it was down (id {}, pid {})\n", w.name, w.id, now->pid);
  }
  return failed;
}

// The definitions named on the command line (all when none is), checked.
std::optional<std::set<std::string>> selected(const tether::SetDefinition& set) {
  std::set<std::string> out;
  for (const auto& n : sopt.names) {
    if (set.find(n) == nullptr) {
      fmt::print(stderr, "tether: {} defines no worker '{}'\n", set.file.string(), n);
      return std::nullopt;
    }
    out.insert(n);
  }
  if (out.empty()) {
    for (const auto& d : set.workers) out.insert(d.name);
  }
  return out;
}

// Brings the chosen definitions to the file's (or `counts`') numbers of
// instances, level by level of `after`: what runs as defined is left
// alone, what runs otherwise is exited and started again, what is missing
// is started, and instances beyond the count (or of definitions the file
// no longer has, when all are chosen) are exited last.
//
// `deps`: definitions chosen only because a named one comes after them (up
// NAMES). They are brought up, not converged: one with any live instance
// is left as it is (however many, whatever its definition now), except
// that instances taken down are started; one with none is started as the
// file says.
int converge(const tether::SetDefinition& set, const std::set<std::string>& chosen,
             const std::map<std::string, int>& counts, bool prune_unknown,
             const std::set<std::string>& deps = {}) {
  auto dir = tether::StateDir::open_default(true);
  if (!dir) return report_error(dir.error());
  auto live = live_workers(*dir, set.name);
  if (!live) return report_error(live.error());

  // Everything checked before anything changes: a name of the file taken
  // by a worker of another set (or of none) is an error.
  std::set<std::string> wanted;
  for (const auto& d : set.workers) {
    if (!chosen.contains(d.name)) continue;
    int n = counts.contains(d.name) ? counts.at(d.name) : d.count;
    for (int i = 1; i <= n; ++i) {
      auto name = tether::instance_name(d.name, i, n);
      if (auto it = live->others.find(name); it != live->others.end()) {
        fmt::print(stderr,
                   "tether: up: the name '{}' is taken by worker {}, which is not of set '{}' "
                   "(exit it, or rename the definition); nothing was changed\n",
                   name, it->second.id, set.name);
        return 1;
      }
      wanted.insert(name);
    }
  }

  int started = 0, unchanged = 0, restarted = 0, exited = 0;
  for (const auto& level : set.levels()) {
    std::vector<Start> starts;
    std::vector<tether::WorkerInfo> replace, taken_down;
    for (auto idx : level) {
      const auto& d = set.workers[idx];
      if (!chosen.contains(d.name)) continue;
      if (deps.contains(d.name)) {
        bool any = false;
        for (const auto& [name, m] : live->members) {
          if (m.definition() != d.name) continue;
          any = true;
          if (stays_down(m.info)) {
            taken_down.push_back(m.info);
          } else {
            ++unchanged;
            fmt::print("{:<20} left as it is: a dependency (pid {})\n", name, m.info.pid);
          }
        }
        if (any) continue;  // else started as the file says, below
      }
      int n = counts.contains(d.name) ? counts.at(d.name) : d.count;
      for (auto& spec : tether::instance_specs(set, d, n)) {
        auto it = live->members.find(spec.name);
        if (it != live->members.end()) {
          if (it->second.spec && same_spec(*it->second.spec, spec)) {
            // As defined, but taken down (tether stop, or resurrected
            // down): up means running, so it is started.
            if (stays_down(it->second.info)) {
              taken_down.push_back(it->second.info);
              continue;
            }
            ++unchanged;
            fmt::print("{:<20} unchanged (pid {})\n", spec.name, it->second.info.pid);
            continue;
          }
          replace.push_back(it->second.info);
          ++restarted;
        } else {
          ++started;
        }
        spec.id = new_id();
        Start st;
        st.spec = std::move(spec);
        starts.push_back(std::move(st));
      }
    }
    // A changed definition: its old instance goes before the new one comes
    // (they share the name, which is claimed).
    if (exit_all(replace, "up: exit the old") > 0) return 1;
    if (start_all(taken_down) > 0) return 1;
    started += static_cast<int>(taken_down.size());
    if (starts.empty()) continue;
    if (int rc = start_specs(*dir, starts, sopt.timeout, "up"); rc != 0) return rc;
    std::set<std::string> replaced;
    for (const auto& w : replace) replaced.insert(w.name);
    for (const auto& st : starts) {
      fmt::print("{:<20} {} (id {}, pid {})\n", st.spec.name,
                 replaced.contains(st.spec.name) ? "restarted: its definition changed" : "started",
                 st.spec.id, st.worker);
    }
  }

  // Instances beyond the count, and (for a whole `up`) workers of
  // definitions the file no longer has.
  std::vector<tether::WorkerInfo> extra;
  for (const auto& [name, m] : live->members) {
    if (wanted.contains(name)) continue;
    bool ours = (chosen.contains(m.definition()) && !deps.contains(m.definition())) ||
                (prune_unknown && set.find(m.definition()) == nullptr);
    if (ours) extra.push_back(m.info);
  }
  if (int failed = exit_all(extra, "up: exit"); failed > 0) return 1;
  for (const auto& w : extra) fmt::print("{:<20} exited: beyond the count\n", w.name);
  exited = static_cast<int>(extra.size());
  fmt::print("set {}: {} started, {} restarted, {} unchanged, {} exited\n", set.name, started,
             restarted, unchanged, exited);
  record(&*dir, set.name);
  return 0;
}

// The definitions named, and every one they come `after`, transitively:
// `up web` brings up what web waits for, as `docker compose up web` does
// (unless --no-deps). The file is checked, so every name is defined and
// there is no cycle.
std::set<std::string> with_dependencies(const tether::SetDefinition& set,
                                        std::set<std::string> chosen) {
  std::vector<std::string> todo(chosen.begin(), chosen.end());
  while (!todo.empty()) {
    const auto* d = set.find(todo.back());
    todo.pop_back();
    if (d == nullptr) continue;
    for (const auto& a : d->after) {
      if (chosen.insert(a).second) todo.push_back(a);
    }
  }
  return chosen;
}

int do_up() {
  auto set = load();
  if (!set) return bad_file(set.error());
  auto chosen = selected(*set);
  if (!chosen) return 2;
  if (sopt.no_deps && sopt.names.empty()) {
    fmt::print(stderr, "tether: up: --no-deps needs the NAMEs whose dependencies to leave out\n");
    return 2;
  }
  std::set<std::string> deps;
  if (!sopt.names.empty() && !sopt.no_deps) {
    auto all = with_dependencies(*set, *chosen);
    std::set_difference(all.begin(), all.end(), chosen->begin(), chosen->end(),
                        std::inserter(deps, deps.begin()));
    chosen = std::move(all);
  }
  return converge(*set, *chosen, {}, sopt.names.empty(), deps);
}

int do_scale() {
  auto set = load();
  if (!set) return bad_file(set.error());
  std::map<std::string, int> counts;
  std::set<std::string> chosen;
  for (const auto& arg : sopt.names) {
    auto eq = arg.find('=');
    int n = -1;
    if (eq != std::string::npos) {
      try {
        std::size_t used = 0;
        n = std::stoi(arg.substr(eq + 1), &used);
        if (used != arg.size() - eq - 1) n = -1;
      } catch (...) {
        n = -1;
      }
    }
    if (n < 0 || n > 10000) {
      fmt::print(stderr, "tether: scale: '{}' is not NAME=N (N from 0 to 10000)\n", arg);
      return 2;
    }
    std::string name = arg.substr(0, eq);
    if (set->find(name) == nullptr) {
      fmt::print(stderr, "tether: {} defines no worker '{}'\n", set->file.string(), name);
      return 2;
    }
    counts[name] = n;
    chosen.insert(name);
  }
  return converge(*set, chosen, counts, false);
}

int do_down() {
  auto set = load();
  if (!set) return bad_file(set.error());
  auto chosen = selected(*set);
  if (!chosen) return 2;
  auto dir = tether::StateDir::open_default(false);
  if (!dir) {
    if (dir.error() == std::errc::no_such_file_or_directory) {
      fmt::print("set {}: nothing runs\n", set->name);
      if (sopt.names.empty()) record(nullptr, set->name);
      return 0;
    }
    return report_error(dir.error());
  }
  auto live = live_workers(*dir, set->name);
  if (!live) return report_error(live.error());
  // Backwards through the levels: what starts after a worker stops before
  // it. Workers of definitions the file no longer has go first.
  auto levels = set->levels();
  std::vector<std::vector<tether::WorkerInfo>> by_level(levels.size() + 1);
  for (const auto& [name, m] : live->members) {
    const auto* d = set->find(m.definition());
    if (d == nullptr) {
      if (sopt.names.empty()) by_level.back().push_back(m.info);
      continue;
    }
    if (!chosen->contains(d->name)) continue;
    for (std::size_t l = 0; l < levels.size(); ++l) {
      for (auto idx : levels[l]) {
        if (&set->workers[idx] == d) by_level[l].push_back(m.info);
      }
    }
  }
  int failed = 0, exited = 0;
  std::vector<std::size_t> order{levels.size()};  // the unknown ones first
  for (auto l = levels.size(); l-- > 0;) order.push_back(l);
  for (auto l : order) {
    failed += exit_all(by_level[l], "down");
    for (const auto& w : by_level[l]) {
      fmt::print("{:<20} exited\n", w.name);
      ++exited;
    }
  }
  fmt::print("set {}: {} exited{}\n", set->name, exited - failed,
             failed > 0 ? fmt::format(", {} failed", failed) : "");
  record(&*dir, set->name);
  return failed > 0 ? 1 : 0;
}

}  // namespace

// The file given with -f, else ./tether.toml, else ./Procfile.
tether::Result<tether::SetDefinition> load_set(const std::string& given) {
  fs::path file = given;
  if (file.empty()) {
    struct stat st {};
    file = ::lstat("tether.toml", &st) == 0 || ::lstat("Procfile", &st) != 0 ? "tether.toml"
                                                                             : "Procfile";
  }
  return tether::load_set_file(file);
}

int bad_file(const tether::Error& e) {
  fmt::print(stderr, "tether: {}\ntether: the set's file is bad; nothing was changed\n",
             e.message());
  return kBadFile;
}

int rolling_restart(const std::string& key, double timeout) {
  auto dir = tether::StateDir::open_default(false);
  if (!dir) {
    if (dir.error() == std::errc::no_such_file_or_directory) {
      return report_error(
          tether::Error(tether::errc::no_such_worker, fmt::format("no worker of '{}' runs", key)));
    }
    return report_error(dir.error());
  }
  auto all = tether::list_workers(*dir);
  if (!all) return report_error(all.error());
  // The instances of a definition (or every worker of a set, or the one
  // worker of that name), in name order.
  std::vector<tether::WorkerInfo> chosen;
  for (const auto& w : all->workers) {
    // A worker that ended and was not restarted (exited) is still the
    // set's: its supervisor holds the name, and up starts it again.
    if (!w.supervisor_alive || w.want == tether::Want::exit) continue;
    bool of_set = w.set == key;
    bool of_definition = false;
    if (!w.set.empty() && !of_set) {
      auto spec = tether::read_worker_spec(w);
      of_definition = spec && spec->definition == key;
    }
    if (of_set || of_definition) chosen.push_back(w);
  }
  if (chosen.empty()) {
    auto one = tether::find_worker(*dir, key);
    if (!one) return report_error(one.error());
    chosen.push_back(*one);
  }
  // One at a time: the next is restarted only once this one is up again
  // (ready, when it says when it is) with a new pid; so at most one is
  // ever down. A failure stops the roll, leaving the rest as they were.
  for (const auto& w : chosen) {
    auto deadline = tether::Deadline(std::chrono::duration<double>(timeout));
    if (auto r = tether::send_command(w, "restart"); !r) return report_error(r.error());
    auto now = tether::wait_worker_state(w, tether::WorkerState::up, deadline, w.pid, w.commands);
    if (!now) {
      fmt::print(stderr,
                 "tether: restart --rolling: {} did not come up again; the roll stops "
                 "here (the workers after it were not restarted)\n",
                 w.display_name());
      return report_error(now.error());
    }
    fmt::print("{:<20} restarted, pid {} (was {})\n", now->name, now->pid, w.pid);
  }
  fmt::print("{}: {} restarted, one at a time\n", key, chosen.size());
  return 0;
}

void add_set_commands(CLI::App& app) {
  auto with_file = [](CLI::App* cmd) {
    cmd->add_option("-f,--file", sopt.file,
                    "The set's file (default: ./tether.toml, else ./Procfile)");
    cmd->add_option("--timeout", sopt.timeout,
                    "Seconds to wait for each level to start or stop (default 30)")
        ->check(positive_seconds(86400.0));
    return cmd;
  };
  up_cmd = with_file(app.add_subcommand(
      "up", "Start a set of workers from a file; leave alone what runs as defined"));
  up_cmd->add_option("names", sopt.names,
                     "Only these definitions and those they come after (default: all)");
  up_cmd->add_flag("--no-deps", sopt.no_deps, "With NAMES: not the definitions they come after");
  down_cmd = with_file(app.add_subcommand("down", "Stop a set's workers, in reverse order"));
  down_cmd->add_option("names", sopt.names, "Only these definitions (default: all)");
  scale_cmd =
      with_file(app.add_subcommand("scale", "Run N instances of a definition: tether scale web=4"));
  scale_cmd->add_option("counts", sopt.names, "NAME=N …")->required();
}

int run_sets() {
  if (*up_cmd) return do_up();
  if (*down_cmd) return do_down();
  if (*scale_cmd) return do_scale();
  return -1;
}

}  // namespace tether_cli
