// Pieces shared by the supervisor and its clients.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "tether/supervise.hpp"

namespace tether::supervise_detail {

inline constexpr const char* kStatusFile = "status.json";
inline constexpr const char* kStatusSpare = ".status.spare";
inline constexpr const char* kLockFile = "lock";
inline constexpr const char* kSpecFile = "spec.json";
inline constexpr std::size_t kMaxSpec = 8u << 20;
inline constexpr const char* kControlFifo = "control";
inline constexpr const char* kNamesDir = ".names";
// Not "log": runit's sv takes <dir>/log for a log service's directory.
inline constexpr const char* kLogFile = "worker.log";
// Longest command line: a write this short to a FIFO is atomic (PIPE_BUF).
inline constexpr std::size_t kMaxCommand = 4096;
// Longest status record read; a record is rewritten in place within its
// reserved size, which grows by this much when it must.
inline constexpr std::size_t kStatusReserve = 4096;
inline constexpr std::size_t kMaxStatus = 1 << 20;

std::int64_t now_ms();

// Opens (creating it 0700 when `create`) a directory that must be ours,
// as StateDir::open and ConfigDir::open check theirs: every ancestor
// belongs to us or to root and is not writable by others unless sticky,
// the directory itself is no symbolic link, and none of the `forbidden`
// mode bits is set. `kind` names it in messages ("state directory"),
// `variable` is the environment variable that chooses another.
Result<std::pair<Fd, std::filesystem::path>> open_owned_directory(std::filesystem::path path,
                                                                  bool create,
                                                                  std::string_view kind,
                                                                  mode_t forbidden,
                                                                  std::string_view variable);

// Opens <state>/<name> as a directory of ours, relative to the state
// directory's descriptor, never following a symbolic link.
Result<Fd> open_worker_dir(int state_fd, std::string_view name);

// Reads a small regular file relative to `dirfd`: opened O_NONBLOCK (a FIFO
// planted there does not hang us) and O_NOFOLLOW, refused unless it is a
// regular file of ours, at most `max` bytes.
Result<std::string> read_small_file(int dirfd, const char* name, std::size_t max,
                                    const std::filesystem::path& shown);

// True while a supervisor holds the lock in the directory `dirfd`.
bool lock_held(int dirfd);

// status.json, both ways. This file alone knows its fields.
std::string encode_status(const WorkerInfo& w);
// Parses a record: bad_record (naming the file and the field) for anything
// malformed, never an exception.
Result<WorkerInfo> decode_status(std::string_view text, const std::filesystem::path& shown);
// Reads <dirfd>/status.json.
Result<WorkerInfo> read_status(int dirfd, const std::filesystem::path& dir);

// A record file that is rewritten without ever needing a new block: two
// files (the record and a spare) are reserved at creation; a change is
// written into the spare, which is then swapped with the record in one step
// (renameat2 RENAME_EXCHANGE). A reader sees the old record or the new one,
// whole; on a full disk the record is still replaced (tested).
class RecordFile {
 public:
  RecordFile() = default;
  // Creates `name` and `spare` in `dirfd` with room for `reserve` bytes.
  // `pad`: records are padded with spaces to the reserved size (JSON); else
  // they must always be exactly `reserve` bytes (runit's status).
  static Result<RecordFile> create(int dirfd, std::string name, std::string spare,
                                   std::size_t reserve, bool pad);
  Result<void> replace(std::string_view text);

 private:
  int dirfd_ = -1;
  std::string name_, spare_;
  std::size_t reserve_ = 0;
  bool pad_ = false;
  Fd spare_fd_;
  Fd record_fd_;
};

// /proc/<pid>/stat: what proves a process's identity.
struct ProcStat {
  pid_t ppid = 0, pgrp = 0, session = 0;
  std::uint64_t cpu_ticks = 0;     // utime + stime (fields 14, 15)
  std::uint64_t reaped_ticks = 0;  // cutime + cstime (16, 17): children it waited for
  std::uint64_t start_ticks = 0;   // field 22, clock ticks after boot
  std::uint64_t rss_pages = 0;     // field 24
};
std::optional<ProcStat> read_proc_stat(pid_t pid);

// The resident memory of every descendant of process `root` (root itself
// not counted), found through /proc/<pid>/task/<tid>/children of each: what
// a supervisor (the worker's parent, and the subreaper of what the worker
// leaves behind) checks against a memory limit. A process that ends while
// it is read counts as nothing.
struct TreeMemory {
  std::uint64_t rss_bytes = 0;
  int processes = 0;
};
TreeMemory descendants_memory(pid_t root);

// Removes <parent_fd>/<name> and everything under it, never following a
// symbolic link (unlinkat/openat relative to held descriptors).
Result<void> remove_tree(int parent_fd, const std::string& name);

// Names given with --name are claimed under <state>/.names, a symbolic link
// each pointing at the id that holds it, made while holding an exclusive
// flock on the state directory. A claim whose worker is gone is stale and
// taken over. Fails with EEXIST ("a worker named web is already running
// (id …)") while the holder lives.
Result<void> claim_name(int state_fd, std::string_view name, std::string_view id);
// Removes the claim if it is still ours.
void release_name(int state_fd, std::string_view name, std::string_view id);

}  // namespace tether::supervise_detail
