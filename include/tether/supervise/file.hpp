// tether/supervise/file.hpp — a set of workers described in a file:
// `tether.toml` (one table per worker) or a `Procfile` (`name: command`
// lines, as foreman and honcho read them). `tether up` starts a set,
// `tether down` stops it; see docs/supervisor.md for the format.
//
//   # tether.toml
//   name = "shop"                      # the set (default: the directory's name)
//   [db]
//   command = ["postgres", "-D", "data"]
//   wait_ready = true
//   [web]
//   command = "gunicorn app:app"       # a string runs with /bin/sh -c
//   count = 3                          # web-1, web-2, web-3
//   after = ["db"]                     # started once db is ready; stopped before it
//   env = { PORT = "8080" }
//
//   auto set = tether::load_set_file("tether.toml");
//   if (!set) fmt::print(stderr, "{}\n", set.error().message());
//   // "tether.toml:7:1: [web]: unknown key 'comand' (did you mean 'command'?)"
//
// Every problem is a bad_definition error whose message starts with the
// file, line and column; a file that loads is whole: every command present,
// every count at least 1, every name good and unique (instances too), every
// `after` naming a worker of the file, and no cycle among them.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tether/supervise.hpp"

namespace tether {

struct WorkerDefinition {
  std::string name;
  std::string key;  // its table's key in the file (the name unless `name` says another)
  std::vector<std::string> command;  // a string in the file becomes /bin/sh -c STRING
  int count = 1;                     // NAME when 1, else NAME-1 … NAME-N
  std::vector<std::pair<std::string, std::string>> env;  // env_file's first, then env's
  std::filesystem::path cwd;                             // absolute; empty: the file's directory
  RestartPolicy restart = RestartPolicy::on_failure;
  int max_restarts = -1;
  std::chrono::milliseconds grace{5000};
  bool wait_ready = false;
  int ready_fd = 3;
  std::uint64_t log_size = 1u << 20;
  int log_keep = 3;
  std::uint64_t memory_limit = 0;  // bytes; 0: none
  bool tty = false;
  std::vector<std::string> after;  // names of other definitions
  int line = 0, column = 0;        // where it is defined
};

// A size in bytes as people write it: "4096", "512K", "10M", "1GiB", "2 GB":
// at most 15 digits, then nothing, B, or a unit in these spellings (K, M, G
// and KB, MB, GB are powers of 1024, as KiB, MiB, GiB; "k" or "mb" are
// refused, not guessed at; spaces before or in the unit are ignored).
// nullopt for anything else, or more than 2^64 - 1.
std::optional<std::uint64_t> parse_byte_size(std::string_view text);

struct SetDefinition {
  std::string name;
  std::filesystem::path file;             // absolute
  std::vector<WorkerDefinition> workers;  // in the file's order

  const WorkerDefinition* find(std::string_view name) const noexcept;
  // The start order: each level's definitions start together once every
  // one of the level before is ready (or running, when it does not say it
  // is ready); `down` goes through the levels backwards.
  std::vector<std::vector<std::size_t>> levels() const;
};

// Reads FILE: a Procfile when its name is `Procfile` or starts with
// `Procfile.`, else TOML. Relative paths inside (cwd, env_file) are taken
// from the file's directory.
Result<SetDefinition> load_set_file(const std::filesystem::path& file);
// The same from text; `file` names it in messages and anchors relative
// paths. An env_file is read when named (so parsing can touch the disk).
Result<SetDefinition> parse_set_toml(std::string_view text, const std::filesystem::path& file);
Result<SetDefinition> parse_procfile(std::string_view text, const std::filesystem::path& file);

// The name of instance `i` (1-based) of a definition run `count` times.
std::string instance_name(std::string_view definition, int i, int count);
// A spec for each instance (ids left empty), labelled with the set.
std::vector<SupervisorSpec> instance_specs(const SetDefinition& set, const WorkerDefinition& def,
                                           int count);

}  // namespace tether
