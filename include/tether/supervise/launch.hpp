// tether/supervise/launch.hpp — how `tether open` hands workers to
// `tether-supervise`, and how each supervisor answers. Both ends of both
// protocols live in src/supervise/launch.cpp; nothing else parses them.
//
// tether open starts `tether-supervise _supervise` with
//   fd 0  a pipe carrying the launch: the state directory's path, then one
//         spec per worker, JSON, a line each (never the command line: argv
//         is readable by every user in /proc/PID/cmdline, and specs carry
//         the workers' environment);
//   fd 3  the report pipe, where every supervisor writes its lines;
//   fd 4  the state directory, already checked by tether open.
// Every report is one line shorter than PIPE_BUF, so lines from many
// supervisors never mix:
//   "<id> forked <supervisor pid>"                (the launcher, several specs)
//   "<id> ok <worker pid> <supervisor pid>"       (running, or ready)
//   "<id> error <why>"                            ("-" as id: the launcher itself)
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "tether/supervise.hpp"

namespace tether::launch {

inline constexpr int kSpecFd = 0;
inline constexpr int kReportFd = 3;
inline constexpr int kStateFd = 4;
// A launch larger than this is refused (500 specs of a long command line fit).
inline constexpr std::size_t kMaxLaunch = 64u << 20;

struct Launch {
  std::filesystem::path state_dir;
  std::vector<SupervisorSpec> specs;
};

// Specs travel as JSON, so every string in them must be valid UTF-8: this
// says which is not ("--env A", "the command's word 2"), or "" when all are.
// Check before encoding: encode_spec never throws, and would replace bytes
// that are not UTF-8 (U+FFFD) rather than fail.
std::string spec_problem(const SupervisorSpec& spec);
std::string encode_spec(const SupervisorSpec& spec);
Result<SupervisorSpec> decode_spec(std::string_view json);
std::string encode_launch(const Launch& launch);
Result<Launch> decode_launch(std::string_view text);
// The launch's header and its spec lines, not decoded (the launcher forks
// first, and each supervisor decodes its own line: see tools/tether).
struct LaunchLines {
  std::filesystem::path state_dir;
  std::vector<std::string_view> specs;  // into the text given
};
Result<LaunchLines> split_launch(std::string_view text);

struct Report {
  enum class Kind { forked, ok, error };
  Kind kind = Kind::error;
  std::string id;  // "-": the launcher speaks for every spec
  pid_t worker = 0, supervisor = 0;
  std::string text;  // error: why
};

// One line, with its newline; an error's text is made printable and cut to
// fit under PIPE_BUF.
std::string encode_report(const Report& report);
// A line without its newline: bad_record for anything but the three forms.
Result<Report> decode_report(std::string_view line);

}  // namespace tether::launch
