// tether save / resurrect / startup / export systemd: the workers survive
// a reboot. What runs is recorded in the configuration directory
// (tether/supervise/saved.hpp), apart from the state directory that the
// reboot empties; `resurrect` starts it again, and `startup` writes the
// systemd unit that runs `resurrect` at boot. `export systemd` hands a set
// to systemd for good, a unit per worker. See docs/supervisor.md.
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tether/process.hpp"
#include "tether/supervise.hpp"
#include "tether/supervise/file.hpp"
#include "tether/supervise/saved.hpp"
#include "workers.hpp"

namespace tether_cli {

namespace {

namespace fs = std::filesystem;

struct BootOptions {
  double timeout = 30.0;
  bool user = false, system = false, enable = false, remove = false, force = false;
  std::string unit_dir, file, what, dir;
};

BootOptions bopt;
CLI::App *save_cmd, *resurrect_cmd, *startup_cmd, *export_cmd;

constexpr const char* kUnitName = "tether-resurrect.service";
// The first line of every file tether writes for systemd: what `startup
// --remove` and a second `export` may replace; anything else is left alone.
constexpr const char* kMarker = "# Written by tether";

// ---------------------------------------------------------------- save / resurrect

int do_save() {
  auto dir = tether::StateDir::open_default(false);
  std::optional<tether::StateDir> state;
  if (dir) {
    state = std::move(*dir);
  } else if (dir.error() != std::errc::no_such_file_or_directory) {
    return report_error(dir.error());
  }
  auto config = tether::ConfigDir::open_default(true);
  if (!config) return report_error(config.error());
  std::vector<tether::SupervisorSpec> live;
  if (state) {
    auto l = tether::live_specs(*state);
    if (!l) return report_error(l.error());
    live = std::move(*l);
  }
  // Nothing runs (after a reboot, before `resurrect`): saving would forget
  // every saved worker. Said, and refused unless asked for.
  if (live.empty() && !bopt.force) {
    auto old = tether::read_saved(*config);
    if (old && !old->workers.empty()) {
      fmt::print(stderr,
                 "tether: save: no worker runs; saving would forget the {} saved in {} (run "
                 "`tether resurrect` first, or `tether save --force` to forget them)\n",
                 old->workers.size(), (config->path() / "saved.jsonl").string());
      return 1;
    }
  }
  std::size_t n = live.size();
  auto r =
      tether::update_saved(*config, [&](tether::SavedWorkers& s) { s.workers = std::move(live); });
  if (!r) return report_error(r.error());
  fmt::print("saved {} worker{} in {}\n", n, n == 1 ? "" : "s",
             (config->path() / "saved.jsonl").string());
  return 0;
}

int do_resurrect() {
  auto config = tether::ConfigDir::open_default(false);
  if (!config) {
    if (config.error() == std::errc::no_such_file_or_directory) {
      fmt::print("nothing is saved ({} does not exist)\n",
                 tether::ConfigDir::default_path().string());
      return 0;
    }
    return report_error(config.error());
  }
  auto saved = tether::read_saved(*config);
  if (!saved) return report_error(saved.error());
  if (saved->workers.empty()) {
    fmt::print("nothing is saved in {}\n", config->path().string());
    return 0;
  }
  auto dir = tether::StateDir::open_default(true);
  if (!dir) return report_error(dir.error());
  auto all = tether::list_workers(*dir);
  if (!all) return report_error(all.error());
  std::map<std::string, tether::WorkerInfo> live_ids, live_names, dead_ids;
  for (const auto& w : all->workers) {
    if (w.supervisor_alive && w.state != tether::WorkerState::exited) {
      live_ids.emplace(w.id, w);
      live_names.emplace(w.name, w);
    } else {
      dead_ids.emplace(w.id, w);
    }
  }
  int started = 0, running = 0, failed = 0;
  for (const auto& level : tether::start_levels(saved->workers)) {
    std::vector<Start> starts;
    for (auto i : level) {
      const auto& spec = saved->workers[i];
      const tether::WorkerInfo* same = nullptr;
      if (auto it = live_ids.find(spec.id); it != live_ids.end()) {
        same = &it->second;
      } else if (auto named = live_names.find(spec.name);
                 spec.unique_name && named != live_names.end()) {
        same = &named->second;
      }
      if (same != nullptr) {
        fmt::print("{:<20} already runs (id {}, pid {})\n", spec.name, same->id, same->pid);
        ++running;
        continue;
      }
      Start st;
      st.spec = spec;
      // The saved id again when it is free: after a reboot it always is.
      // What a dead supervisor left under it is pruned first (its
      // processes proved to be its own, never a recycled pid's).
      if (auto dead = dead_ids.find(spec.id); dead != dead_ids.end()) {
        if (!tether::prune_worker(dead->second)) st.spec.id = new_id();
      } else if (live_ids.contains(spec.id)) {
        st.spec.id = new_id();
      }
      starts.push_back(std::move(st));
    }
    if (starts.empty()) continue;
    // A level together, as `up` starts it; when one of them cannot start
    // (a program gone since it was saved), the rest of the level is
    // started one by one, so one bad record does not keep the others down.
    std::vector<std::vector<Start>> batches;
    if (start_specs(*dir, starts, bopt.timeout, "resurrect") == 0) {
      batches.push_back(std::move(starts));
    } else {
      for (auto& st : starts) {
        std::vector<Start> one{st};
        if (start_specs(*dir, one, bopt.timeout, "resurrect") != 0) {
          ++failed;
          continue;
        }
        batches.push_back(std::move(one));
      }
    }
    for (const auto& batch : batches) {
      for (const auto& st : batch) {
        if (st.worker > 0) {
          fmt::print("{:<20} started (id {}, pid {})\n", st.spec.name, st.spec.id, st.worker);
        } else {
          fmt::print("{:<20} started down, as it was saved (id {})\n", st.spec.name, st.spec.id);
        }
        ++started;
      }
    }
  }
  fmt::print("resurrected {} worker{} from {}; {} already running{}\n", started,
             started == 1 ? "" : "s", (config->path() / "saved.jsonl").string(), running,
             failed > 0 ? fmt::format(", {} failed", failed) : "");
  return failed > 0 ? 1 : 0;
}

// ---------------------------------------------------------------- systemd files

// A word of an ExecStart= or Environment= line: quoted, with C escapes for
// the quote, the backslash and control characters, and the specifier `%`
// doubled; `$` doubled too in command lines (systemd expands $VAR there).
std::string unit_word(std::string_view s, bool command) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '%':
        out += "%%";
        break;
      case '$':
        out += command ? "$$" : "$";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// A path setting (WorkingDirectory=): taken whole, not quoted; only the
// specifier `%` is doubled. A path with a line break cannot be written.
std::optional<std::string> unit_path(const fs::path& p) {
  std::string out;
  for (char c : p.string()) {
    if (c == '\n' || c == '\r') return std::nullopt;
    out += c == '%' ? std::string("%%") : std::string(1, c);
  }
  return out;
}

// A unit name from a worker's or set's name, as systemd-escape makes one:
// what is not [A-Za-z0-9:_.] becomes \xNN ("-" is kept: it is common in
// names and legal in unit names).
std::string unit_name_part(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == ':' || c == '_' || c == '.' || c == '-') {
      out += c;
    } else {
      out += fmt::format("\\x{:02x}", u);
    }
  }
  return out;
}

// Writes every file or none: each into a new hidden file first, renamed
// into place only once all are written. A file there already that tether
// did not write is refused (before anything is written), unless --force.
int write_files(const fs::path& dir, const std::vector<std::pair<std::string, std::string>>& files,
                const char* what) {
  tether::Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) {
    fmt::print(stderr, "tether: {}: {}: {}\n", what, dir.string(), std::strerror(errno));
    return 1;
  }
  for (const auto& [name, text] : files) {
    tether::Fd old(::openat(d.get(), name.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
    if (!old) {
      if (errno == ENOENT) continue;
      fmt::print(stderr, "tether: {}: {} is there and cannot be read ({}); nothing was written\n",
                 what, (dir / name).string(), std::strerror(errno));
      return 1;
    }
    char head[64] = {};
    auto n = ::read(old.get(), head, sizeof head - 1);
    struct stat st {};
    bool ours = ::fstat(old.get(), &st) == 0 && S_ISREG(st.st_mode) && n > 0 &&
                std::string_view(head, static_cast<std::size_t>(n)).starts_with(kMarker);
    if (!ours && !bopt.force) {
      fmt::print(stderr,
                 "tether: {}: {} is there and was not written by tether; nothing was written "
                 "(--force replaces it)\n",
                 what, (dir / name).string());
      return 1;
    }
  }
  unsigned random = 0;
  if (::getrandom(&random, sizeof random, 0) != sizeof random) random = 0;
  std::vector<std::string> temps;
  auto undo = [&] {
    for (const auto& t : temps) ::unlinkat(d.get(), t.c_str(), 0);
  };
  for (const auto& [name, text] : files) {
    auto tmp = fmt::format(".{}.{:08x}.new", name, random);
    tether::Fd f(
        ::openat(d.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!f) {
      fmt::print(stderr, "tether: {}: create {}: {}; nothing was written\n", what,
                 (dir / tmp).string(), std::strerror(errno));
      undo();
      return 1;
    }
    temps.push_back(tmp);
    auto w = tether::write_all(f.get(), text, (dir / tmp).string());
    if (!w || ::fchmod(f.get(), 0644) != 0 || ::fsync(f.get()) != 0) {
      fmt::print(stderr, "tether: {}: {}; nothing was written\n", what,
                 w ? std::string(std::strerror(errno)) : w.error().message());
      undo();
      return 1;
    }
  }
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (::renameat(d.get(), temps[i].c_str(), d.get(), files[i].first.c_str()) != 0) {
      fmt::print(stderr, "tether: {}: rename into {}: {}\n", what, (dir / files[i].first).string(),
                 std::strerror(errno));
      undo();
      return 1;
    }
    temps[i].clear();
    fmt::print("wrote {}\n", (dir / files[i].first).string());
  }
  ::fsync(d.get());
  return 0;
}

// ---------------------------------------------------------------- startup

fs::path user_unit_dir() {
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x && fs::path(x).is_absolute()) {
    return fs::path(x) / "systemd/user";
  }
  const char* h = std::getenv("HOME");
  return fs::path(h && *h ? h : "/") / ".config/systemd/user";
}

// Runs systemctl (with --user for a user's unit); its failure is printed.
bool systemctl(bool user, const std::vector<std::string>& args) {
  tether::Command c("systemctl");
  if (user) c.arg("--user");
  for (const auto& a : args) c.arg(a);
  auto out = c.stdout_to(tether::Stdio::null()).stderr_to(tether::Stdio::pipe()).output();
  if (!out) {
    fmt::print(stderr, "tether: startup: {}\n", out.error().message());
    return false;
  }
  if (!out->status.success()) {
    fmt::print(stderr, "tether: startup: {} {}: {}{}", c.describe(), out->status.describe(),
               out->err, out->err.ends_with('\n') ? "" : "\n");
    return false;
  }
  return true;
}

int do_startup() {
  bool user = bopt.user || (!bopt.system && ::geteuid() != 0);
  if (!user && ::geteuid() != 0 && bopt.unit_dir.empty()) {
    fmt::print(stderr,
               "tether: startup --system writes into /etc/systemd/system: run it as root, or use "
               "--user\n");
    return 1;
  }
  fs::path dir = !bopt.unit_dir.empty() ? fs::path(bopt.unit_dir)
                 : user                 ? user_unit_dir()
                                        : fs::path("/etc/systemd/system");
  const bool systemd_runs = ::access("/run/systemd/system", F_OK) == 0;
  if (bopt.remove) {
    fs::path unit = dir / kUnitName;
    if (bopt.enable || systemd_runs) (void)systemctl(user, {"disable", kUnitName});
    tether::Fd f(::open(unit.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
    if (!f) {
      if (errno == ENOENT) {
        fmt::print("{} is not there: nothing to remove\n", unit.string());
        return 0;
      }
      fmt::print(stderr, "tether: startup --remove: {}: {}\n", unit.string(), std::strerror(errno));
      return 1;
    }
    char head[64] = {};
    auto n = ::read(f.get(), head, sizeof head - 1);
    if (n <= 0 || !std::string_view(head, static_cast<std::size_t>(n)).starts_with(kMarker)) {
      fmt::print(stderr, "tether: startup --remove: {} was not written by tether: left alone\n",
                 unit.string());
      return 1;
    }
    if (::unlink(unit.c_str()) != 0) {
      fmt::print(stderr, "tether: startup --remove: {}: {}\n", unit.string(), std::strerror(errno));
      return 1;
    }
    fmt::print("removed {}\n", unit.string());
    if (systemd_runs) (void)systemctl(user, {"daemon-reload"});
    return 0;
  }

  // The configuration directory and the state directory as this command
  // sees them now, written into the unit: at boot, `resurrect` reads the
  // same saved workers, whatever the boot's environment says.
  auto config = tether::ConfigDir::open_default(true);
  if (!config) return report_error(config.error());
  std::string env = fmt::format("Environment={}\n",
                                unit_word("TETHER_CONFIG_DIR=" + config->path().string(), false));
  if (const char* d = std::getenv("TETHER_DIR"); d && *d) {
    env += fmt::format("Environment={}\n",
                       unit_word("TETHER_DIR=" + tether::StateDir::default_path().string(), false));
  }
  std::string exe = self_exe();
  std::string text = fmt::format(
      "{} startup: starts the saved workers again at boot.\n"
      "# `tether save` chooses them; `tether startup --remove` removes this file.\n"
      "[Unit]\n"
      "Description=tether: start the saved workers again (tether resurrect)\n"
      "After={}\n"
      "Wants={}\n"
      "\n"
      "[Service]\n"
      "Type=oneshot\n"
      "# The supervisors it starts stay in this unit's control group: the unit\n"
      "# stays active while they run, and stopping it stops them.\n"
      "RemainAfterExit=yes\n"
      "{}"
      "ExecStart={} resurrect\n"
      "TimeoutStartSec=300\n"
      "\n"
      "[Install]\n"
      "WantedBy={}\n",
      kMarker, user ? "default.target" : "network-online.target",
      user ? "default.target" : "network-online.target", env, unit_word(exe, true) + "",
      user ? "default.target" : "multi-user.target");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    fmt::print(stderr, "tether: startup: create {}: {}\n", dir.string(), ec.message());
    return 1;
  }
  if (int rc = write_files(dir, {{kUnitName, text}}, "startup"); rc != 0) return rc;
  if (bopt.enable) {
    if (!systemctl(user, {"daemon-reload"}) || !systemctl(user, {"enable", kUnitName})) {
      fmt::print(stderr,
                 "tether: startup: the unit is written but not enabled; once systemd runs: "
                 "systemctl {}enable {}\n",
                 user ? "--user " : "", kUnitName);
      return 1;
    }
    fmt::print("enabled {}: `tether resurrect` runs at {}\n", kUnitName,
               user ? "your login (or boot, with `loginctl enable-linger`)" : "boot");
  } else {
    fmt::print("to start the saved workers at {}: systemctl {}enable {}\n", user ? "login" : "boot",
               user ? "--user " : "", kUnitName);
  }
  if (user) {
    fmt::print("a user's units start at boot only with lingering: loginctl enable-linger {}\n",
               std::getenv("USER") ? std::getenv("USER") : "$USER");
  }
  return 0;
}

// ---------------------------------------------------------------- export systemd

int do_export() {
  if (bopt.what != "systemd") {
    fmt::print(stderr, "tether: export: only `systemd` is known, not '{}'\n", bopt.what);
    return 2;
  }
  auto set = load_set(bopt.file);
  if (!set) return bad_file(set.error());
  std::string set_part = unit_name_part(set->name);
  auto unit_of = [&](const std::string& instance) {
    return set_part + "-" + unit_name_part(instance) + ".service";
  };
  std::map<std::string, std::vector<std::string>> units_of;  // definition → its units
  for (const auto& d : set->workers) {
    for (int i = 1; i <= d.count; ++i) {
      units_of[d.name].push_back(unit_of(tether::instance_name(d.name, i, d.count)));
    }
  }
  std::vector<std::pair<std::string, std::string>> files;
  std::string target = set_part + ".target";
  std::string wants;
  for (const auto& d : set->workers) {
    for (auto& spec : tether::instance_specs(*set, d, d.count)) {
      std::string unit = unit_of(spec.name);
      wants += " " + unit;
      std::string after;
      for (const auto& a : d.after) {
        for (const auto& u : units_of[a]) after += " " + u;
      }
      auto cwd = unit_path(spec.cwd);
      if (!cwd) {
        fmt::print(stderr,
                   "tether: export: worker {}: its cwd holds a line break, which a unit "
                   "cannot say; nothing was written\n",
                   spec.name);
        return 1;
      }
      std::string exec;
      for (const auto& w : spec.command) exec += (exec.empty() ? "" : " ") + unit_word(w, true);
      std::string env;
      for (const auto& [k, v] : spec.env) {
        env += fmt::format("Environment={}\n", unit_word(fmt::format("{}={}", k, v), false));
      }
      std::string notes;
      if (d.wait_ready) {
        notes += "# wait_ready: tether's readiness is a line on fd " + std::to_string(d.ready_fd) +
                 "; systemd's is sd_notify (Type=notify). This unit does not wait for it.\n";
      }
      if (d.max_restarts >= 0) {
        notes += fmt::format("# max_restarts = {}: as StartLimitBurst, over 10 minutes.\n",
                             d.max_restarts);
      }
      if (d.tty) notes += "# tty = true: systemd gives no terminal; output goes to the journal.\n";
      // The kernel enforces MemoryMax (an OOM kill, then Restart= applies)
      // where tether restarts gracefully when its check finds the tree over.
      std::string memory;
      if (d.memory_limit > 0) {
        notes +=
            "# memory_limit: MemoryMax is the kernel's cgroup limit (an OOM kill, then\n"
            "# Restart= applies); tether stops the worker gracefully and restarts it.\n";
        memory = fmt::format("MemoryMax={}\n", d.memory_limit);
      }
      std::string text = fmt::format(
          "{} export systemd, from {} (set {}, worker {}).\n"
          "[Unit]\n"
          "Description=tether set {}: {}\n"
          "PartOf={}\n"
          "{}{}{}"
          "\n"
          "[Service]\n"
          "Type=exec\n"
          "{}"
          "ExecStart={}\n"
          "WorkingDirectory={}\n"
          "{}{}"
          "Restart={}\n"
          "RestartSec={}ms\n"
          "TimeoutStopSec={}ms\n"
          "\n"
          "[Install]\n"
          "WantedBy={}\n",
          kMarker, set->file.string(), set->name, spec.name, set->name, spec.name, target,
          after.empty() ? "" : "After=" + after.substr(1) + "\n",
          after.empty() ? "" : "Wants=" + after.substr(1) + "\n",
          d.max_restarts >= 0
              ? fmt::format("StartLimitIntervalSec=600\nStartLimitBurst={}\n", d.max_restarts + 1)
              : "",
          notes, exec, *cwd, env, memory,
          spec.restart == tether::RestartPolicy::always       ? "always"
          : spec.restart == tether::RestartPolicy::on_failure ? "on-failure"
                                                              : "no",
          spec.backoff_min.count(), spec.grace.count(), target);
      files.emplace_back(unit, std::move(text));
    }
  }
  files.emplace_back(
      target, fmt::format("{} export systemd, from {} (set {}).\n"
                          "[Unit]\n"
                          "Description=tether set {}\n"
                          "Wants={}\n"
                          "\n"
                          "[Install]\n"
                          "WantedBy=multi-user.target\n",
                          kMarker, set->file.string(), set->name, set->name, wants.substr(1)));
  fs::path dir = bopt.dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    fmt::print(stderr, "tether: export: {} is not a directory\n", dir.string());
    return 1;
  }
  if (int rc = write_files(dir, files, "export"); rc != 0) return rc;
  fmt::print("set {}: {} units; start them all with: systemctl start {}\n", set->name,
             files.size() - 1, target);
  return 0;
}

}  // namespace

void add_boot_commands(CLI::App& app) {
  save_cmd = app.add_subcommand("save", "Record the running workers, to resurrect after a reboot");
  save_cmd->add_flag("--force", bopt.force, "Save even when nothing runs (forgets what was saved)");
  resurrect_cmd =
      app.add_subcommand("resurrect", "Start the saved workers that are not running, in order");
  resurrect_cmd
      ->add_option("--timeout", bopt.timeout, "Seconds to wait for each level (default 30)")
      ->check(positive_seconds(86400.0));
  startup_cmd =
      app.add_subcommand("startup", "Write the systemd unit that resurrects the workers at boot");
  auto* user =
      startup_cmd->add_flag("--user", bopt.user, "A unit of your systemd (default unless root)");
  startup_cmd->add_flag("--system", bopt.system, "A unit of the system's (root; default for root)")
      ->excludes(user);
  startup_cmd->add_flag("--enable", bopt.enable, "Enable it too (systemctl enable)");
  startup_cmd->add_flag("--remove", bopt.remove, "Disable and remove the unit");
  startup_cmd->add_option("--unit-dir", bopt.unit_dir,
                          "Write the unit here instead of systemd's directory");
  startup_cmd->add_flag("--force", bopt.force, "Replace a file tether did not write");
  export_cmd =
      app.add_subcommand("export", "Write a set as systemd units: tether export systemd DIR");
  export_cmd->add_option("format", bopt.what, "systemd")->required();
  export_cmd->add_option("dir", bopt.dir, "The directory for the units")->required();
  export_cmd->add_option("-f,--file", bopt.file,
                         "The set's file (default: ./tether.toml, else ./Procfile)");
  export_cmd->add_flag("--force", bopt.force, "Replace files tether did not write");
}

int run_boot() {
  if (*save_cmd) return do_save();
  if (*resurrect_cmd) return do_resurrect();
  if (*startup_cmd) return do_startup();
  if (*export_cmd) return do_export();
  return -1;
}

}  // namespace tether_cli
