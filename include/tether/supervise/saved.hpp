// tether/supervise/saved.hpp — workers recorded to be started again after
// a reboot. The state directory lives in /run or $XDG_RUNTIME_DIR and
// vanishes with the machine; what must survive is kept apart, in the
// configuration directory:
//
//   <config>/saved.jsonl    the saved workers: a header line, then one
//                           spec per line (the spec.json each worker's
//                           supervisor was started with), 0600
//
// `tether up` records the set it brought up (and `down` forgets what it
// stopped), `tether save` records every worker that runs, and `tether
// resurrect` starts again whatever is saved and not running, in the
// order of the sets' `after`. See docs/supervisor.md.
//
//   auto dir = tether::ConfigDir::open_default();
//   auto saved = tether::read_saved(*dir);          // empty when nothing is saved
//   for (auto& s : saved->workers) fmt::print("{} {}\n", s.name, s.command[0]);
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tether/supervise.hpp"

namespace tether {

// $TETHER_CONFIG_DIR, else $XDG_CONFIG_HOME/tether, else /etc/tether for
// root, else ~/.config/tether. Checked as the state directory is (ours,
// every ancestor ours or root's), except that others may read it (people
// keep their tether.toml there) but never write in it; created 0700, with
// ~/.config when that is missing too. Held open once checked.
class ConfigDir {
 public:
  static std::filesystem::path default_path();
  static Result<ConfigDir> open(std::filesystem::path path, bool create = true);
  static Result<ConfigDir> open_default(bool create = true);

  const std::filesystem::path& path() const noexcept { return path_; }
  int fd() const noexcept { return fd_ ? fd_->get() : -1; }

 private:
  std::filesystem::path path_;
  std::shared_ptr<Fd> fd_;
};

struct SavedWorkers {
  std::int64_t saved_ms = 0;  // unix time of the last change
  std::vector<SupervisorSpec> workers;
};

// The file's text, both ways. decode_saved refuses (bad_record, naming
// `shown` and the line) anything but a header line of this version then
// spec lines, each a spec that launch::decode_spec takes.
std::string encode_saved(const SavedWorkers& saved);
Result<SavedWorkers> decode_saved(std::string_view text, const std::filesystem::path& shown);

// What is saved: no workers when there is no file yet. A file that is not
// a regular file of ours (a FIFO, a link) or not a saved file is an error.
Result<SavedWorkers> read_saved(const ConfigDir& dir);
// Replaces the file atomically: written to a new file (0600, O_EXCL),
// flushed to the disk, renamed over the old one, the directory flushed. A
// reader sees the old list or the new one, whole, even after a crash.
Result<void> write_saved(const ConfigDir& dir, const SavedWorkers& saved);
// Reads, changes and writes under an exclusive lock of the directory, so
// two commands recording at once lose neither change.
Result<void> update_saved(const ConfigDir& dir, const std::function<void(SavedWorkers&)>& change);

// The specs of the live workers of `dir` (those whose supervisor runs and
// that are not exiting), read from their spec.json, in list order; with
// `set` given, only that set's. Workers taken down (`tether stop`) are
// live: they are saved with start_down, and resurrect brings their
// supervisors back with the worker down, as they were.
Result<std::vector<SupervisorSpec>> live_specs(const StateDir& dir,
                                               std::optional<std::string_view> set = {});
// The set's saved workers replaced by its live ones (none: the set is
// forgotten), the rest left as they are: what `up`, `scale` and `down`
// record.
Result<std::size_t> save_set(const ConfigDir& config, const StateDir& dir, std::string_view set);

// The order to start saved workers in: each level once every one of the
// level before is up. A worker that belongs to a set waits for the workers
// of the same set whose definition its `after` names (a name that is not
// saved is no wait); the others start in the first level. Indices into
// `workers`, each level in the list's order.
std::vector<std::vector<std::size_t>> start_levels(const std::vector<SupervisorSpec>& workers);

}  // namespace tether
