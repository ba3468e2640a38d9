// The configuration directory and the saved workers (saved.jsonl): what
// `tether resurrect` starts again after a reboot. Every file is reached
// relative to the directory's held descriptor, as in the state directory.
#include "tether/supervise/saved.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "internal.hpp"
#include "tether/supervise/launch.hpp"

namespace tether {

namespace sd = supervise_detail;
namespace fs = std::filesystem;

namespace {

constexpr const char* kSavedFile = "saved.jsonl";
constexpr const char* kHeaderKind = "tether saved workers";
constexpr int kVersion = 1;
// Far more than 10,000 workers' specs; a file larger is not ours.
constexpr std::size_t kMaxSaved = 256u << 20;

fs::path made_absolute(const fs::path& p) {
  std::error_code ec;
  auto a = fs::absolute(p, ec);
  return ec ? p : a.lexically_normal();
}

}  // namespace

// ---------------------------------------------------------------- the directory

fs::path ConfigDir::default_path() {
  if (const char* d = std::getenv("TETHER_CONFIG_DIR"); d && *d) return made_absolute(d);
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x && fs::path(x).is_absolute()) {
    return made_absolute(fs::path(x) / "tether");
  }
  if (::geteuid() == 0) return "/etc/tether";
  if (const char* h = std::getenv("HOME"); h && *h)
    return made_absolute(fs::path(h) / ".config/tether");
  return fmt::format("/tmp/tether-config-{}", ::geteuid());
}

Result<ConfigDir> ConfigDir::open(fs::path path, bool create) {
  path = made_absolute(path);
  if (path.filename().empty()) path = path.parent_path();
  // ~/.config itself may be missing on a fresh account: made 0700, as the
  // XDG base directories are.
  if (create) {
    std::error_code ec;
    auto parent = path.parent_path();
    if (!fs::exists(parent, ec) && fs::exists(parent.parent_path(), ec)) {
      if (::mkdir(parent.c_str(), 0700) != 0 && errno != EEXIST) {
        return fail(errno, "create " + parent.string() + " for the configuration directory");
      }
    }
  }
  auto d = sd::open_owned_directory(std::move(path), create, "configuration directory", 022,
                                    "TETHER_CONFIG_DIR");
  if (!d) return std::unexpected(d.error());
  ConfigDir c;
  c.path_ = std::move(d->second);
  c.fd_ = std::make_shared<Fd>(std::move(d->first));
  return c;
}

Result<ConfigDir> ConfigDir::open_default(bool create) {
  return open(default_path(), create);
}

// ---------------------------------------------------------------- the file

std::string encode_saved(const SavedWorkers& saved) {
  nlohmann::json header = {
      {"kind", kHeaderKind}, {"version", kVersion}, {"saved_ms", saved.saved_ms}};
  std::string text = header.dump() + "\n";
  for (const auto& s : saved.workers) text += launch::encode_spec(s) + "\n";
  return text;
}

Result<SavedWorkers> decode_saved(std::string_view text, const fs::path& shown) {
  SavedWorkers saved;
  std::size_t line_no = 0;
  auto bad = [&](const std::string& why) {
    return fail(errc::bad_record, fmt::format("{}:{}: {}", shown.string(), line_no, why));
  };
  while (!text.empty()) {
    ++line_no;
    auto nl = text.find('\n');
    if (nl == std::string_view::npos) return bad("the last line is cut short (no newline)");
    auto line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    if (line_no == 1) {
      auto h = nlohmann::json::parse(line, nullptr, false);
      if (h.is_discarded() || !h.is_object() || !h.contains("kind") || h["kind"] != kHeaderKind) {
        return bad("not a file of saved workers");
      }
      if (!h.contains("version") || !h["version"].is_number_integer() ||
          h["version"].get<std::int64_t>() != kVersion) {
        return bad(fmt::format("saved by another version of tether (this one reads version {})",
                               kVersion));
      }
      if (h.contains("saved_ms") && h["saved_ms"].is_number_integer()) {
        saved.saved_ms = h["saved_ms"].get<std::int64_t>();
      }
      continue;
    }
    auto spec = launch::decode_spec(line);
    if (!spec) return bad(spec.error().message());
    saved.workers.push_back(std::move(*spec));
  }
  if (line_no == 0) return bad("empty");
  return saved;
}

Result<SavedWorkers> read_saved(const ConfigDir& dir) {
  auto shown = dir.path() / kSavedFile;
  auto text = sd::read_small_file(dir.fd(), kSavedFile, kMaxSaved, shown);
  if (!text) {
    if (text.error() == std::errc::no_such_file_or_directory) return SavedWorkers{};
    return std::unexpected(text.error());
  }
  return decode_saved(*text, shown);
}

Result<void> write_saved(const ConfigDir& dir, const SavedWorkers& saved) {
  auto shown = (dir.path() / kSavedFile).string();
  for (const auto& s : saved.workers) {
    if (auto why = launch::spec_problem(s); !why.empty()) {
      return fail(EINVAL, fmt::format("save {}: worker {}: {}", shown, s.name, why));
    }
  }
  unsigned random = 0;
  if (::getrandom(&random, sizeof random, 0) != sizeof random) random = 0;
  std::string tmp = fmt::format(".{}.{}.{:08x}", kSavedFile, ::getpid(), random);
  Fd fd(
      ::openat(dir.fd(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return fail(errno, "save " + shown + ": create " + tmp);
  auto done = [&](Result<void> r) {
    if (!r) ::unlinkat(dir.fd(), tmp.c_str(), 0);
    return r;
  };
  if (::fchmod(fd.get(), 0600) != 0) return done(fail(errno, "save " + shown));
  std::string text = encode_saved(saved);
  if (auto w = write_all(fd.get(), text, shown); !w) return done(w);
  // On the disk before the name points at it: after a crash the name
  // holds the old list or the new one, never an empty file.
  if (::fsync(fd.get()) != 0) return done(fail(errno, "save " + shown + ": fsync"));
  if (::renameat(dir.fd(), tmp.c_str(), dir.fd(), kSavedFile) != 0) {
    return done(fail(errno, "save " + shown));
  }
  if (::fsync(dir.fd()) != 0) return fail(errno, "save " + shown + ": fsync its directory");
  return {};
}

Result<void> update_saved(const ConfigDir& dir, const std::function<void(SavedWorkers&)>& change) {
  // The directory's own descriptor is the lock (flock works on a directory
  // opened for reading): nothing to create, nothing left behind.
  Fd lock(::openat(dir.fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!lock) return fail(errno, "lock " + dir.path().string());
  while (::flock(lock.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return fail(errno, "lock " + dir.path().string());
  }
  auto saved = read_saved(dir);
  if (!saved) return std::unexpected(saved.error());
  change(*saved);
  saved->saved_ms = sd::now_ms();
  return write_saved(dir, *saved);
}

// ---------------------------------------------------------------- what runs

Result<std::vector<SupervisorSpec>> live_specs(const StateDir& dir,
                                               std::optional<std::string_view> set) {
  auto all = list_workers(dir);
  if (!all) return std::unexpected(all.error());
  std::vector<SupervisorSpec> out;
  for (const auto& w : all->workers) {
    // Ended and not restarted (exited) is saved too: after a reboot it
    // starts afresh, as a unit that failed before does.
    if (!w.supervisor_alive || w.want == Want::exit) continue;
    if (set && w.set != *set) continue;
    auto spec = read_worker_spec(w);
    // A worker gone between the listing and now is not live.
    if (!spec) {
      if (spec.error() == std::errc::no_such_file_or_directory) continue;
      return std::unexpected(spec.error());
    }
    // A worker taken down comes back down: started, it would run what
    // someone stopped.
    spec->start_down = w.want == Want::down;
    out.push_back(std::move(*spec));
  }
  return out;
}

Result<std::size_t> save_set(const ConfigDir& config, const StateDir& dir, std::string_view set) {
  auto live = live_specs(dir, set);
  if (!live) return std::unexpected(live.error());
  std::size_t n = live->size();
  auto r = update_saved(config, [&](SavedWorkers& saved) {
    std::erase_if(saved.workers, [&](const SupervisorSpec& s) { return s.set == set; });
    for (auto& s : *live) saved.workers.push_back(std::move(s));
  });
  if (!r) return std::unexpected(r.error());
  return n;
}

// ---------------------------------------------------------------- order

std::vector<std::vector<std::size_t>> start_levels(const std::vector<SupervisorSpec>& workers) {
  // (set, definition) → the workers that are its instances.
  std::map<std::pair<std::string, std::string>, std::vector<std::size_t>> instances;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    if (!workers[i].set.empty()) instances[{workers[i].set, workers[i].definition}].push_back(i);
  }
  std::vector<int> level(workers.size(), -1);
  // Longest path over `after`, by repeated relaxation: a saved file comes
  // from checked sets, but it is read from disk, so a cycle must end too
  // (after as many rounds as workers, what is left starts last).
  bool changed = true;
  for (std::size_t round = 0; changed && round <= workers.size(); ++round) {
    changed = false;
    for (std::size_t i = 0; i < workers.size(); ++i) {
      int l = 0;
      if (!workers[i].set.empty()) {
        for (const auto& a : workers[i].after) {
          auto it = instances.find({workers[i].set, a});
          if (it == instances.end()) continue;
          for (auto j : it->second) {
            if (j != i) l = std::max(l, level[j] + 1);
          }
        }
      }
      if (l != level[i] && l < static_cast<int>(workers.size())) {
        level[i] = l;
        changed = true;
      }
    }
  }
  std::vector<std::vector<std::size_t>> out;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    auto l = static_cast<std::size_t>(std::max(level[i], 0));
    if (out.size() <= l) out.resize(l + 1);
    out[l].push_back(i);
  }
  return out;
}

}  // namespace tether
