// Pieces shared by the supervisor and its clients.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "tether/supervise.hpp"

namespace tether::supervise_detail {

inline constexpr const char* kStatusFile = "status.json";
inline constexpr const char* kLockFile = "lock";
inline constexpr const char* kControlFifo = "control";
// Not "log": runit's sv takes <dir>/log for a log service's directory.
inline constexpr const char* kLogFile = "worker.log";
// Longest command line: a write this short to a FIFO is atomic (PIPE_BUF).
inline constexpr std::size_t kMaxCommand = 4096;

std::int64_t now_ms();

// True while a supervisor holds the directory's lock.
bool lock_held(const std::filesystem::path& worker_dir);

// Reads status.json: fails if it is missing or not valid.
Result<WorkerInfo> read_status(const std::filesystem::path& worker_dir);

// Writes `text` to `path` through a temporary file and rename(2), so a
// reader sees the old or the new content, never a mix.
Result<void> write_atomically(const std::filesystem::path& path, std::string_view text);

}  // namespace tether::supervise_detail
