// fuzz_setfile: a set's file (tether/supervise/file.hpp), tether.toml or a
// Procfile. Whatever loads must be whole: workers present, every command
// non-empty, every count at least 1, every instance name good and unique,
// every spec encodable (UTF-8), and the levels an order in which each
// definition comes after all it names.
//
// Input: [which] then the text. The file is named under a directory that
// does not exist, so a relative cwd or env_file finds nothing on disk.
#include <map>
#include <set>
#include <string>

#include "check.hpp"
#include "tether/supervise/file.hpp"
#include "tether/supervise/launch.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  bool procfile = (in.byte() & 1) != 0;
  std::string_view text = in.rest();
  auto set = procfile ? tether::parse_procfile(text, "/nonexistent-tether-fuzz/Procfile")
                      : tether::parse_set_toml(text, "/nonexistent-tether-fuzz/tether.toml");
  if (!set) {
    FUZZ_CHECK(set.error() == tether::errc::bad_definition ||
                   set.error().message().find("/nonexistent-tether-fuzz/") != std::string::npos,
               "an error that is not bad_definition: %s", set.error().message().c_str());
    return 0;
  }
  FUZZ_CHECK(!set->workers.empty(), "a set of no worker loaded");
  FUZZ_CHECK(tether::check_worker_name(set->name).empty(), "set name '%s'", set->name.c_str());
  std::set<std::string> names;
  for (const auto& d : set->workers) {
    FUZZ_CHECK(!d.command.empty() && !d.command.front().empty(), "[%s] without a command",
               d.name.c_str());
    FUZZ_CHECK(d.count >= 1 && d.count <= 10000, "[%s] count %d", d.name.c_str(), d.count);
    FUZZ_CHECK(d.line >= 1 && d.column >= 1, "[%s] at %d:%d", d.name.c_str(), d.line, d.column);
    int n = std::min(d.count, 50);  // enough to check the names
    for (const auto& spec : tether::instance_specs(*set, d, n)) {
      FUZZ_CHECK(tether::check_worker_name(spec.name).empty(), "instance name '%s'",
                 spec.name.c_str());
      FUZZ_CHECK(names.insert(spec.name).second || n != d.count, "instance '%s' twice",
                 spec.name.c_str());
      FUZZ_CHECK(tether::launch::spec_problem(spec).empty(), "[%s] spec not encodable: %s",
                 d.name.c_str(), tether::launch::spec_problem(spec).c_str());
    }
  }
  std::map<std::string, std::size_t> level_of;
  std::size_t placed = 0;
  auto levels = set->levels();
  for (std::size_t l = 0; l < levels.size(); ++l) {
    for (auto i : levels[l]) {
      FUZZ_CHECK(i < set->workers.size(), "level index %zu", i);
      FUZZ_CHECK(level_of.emplace(set->workers[i].name, l).second, "[%s] in two levels",
                 set->workers[i].name.c_str());
      ++placed;
    }
  }
  FUZZ_CHECK(placed == set->workers.size(), "%zu of %zu definitions placed", placed,
             set->workers.size());
  for (const auto& d : set->workers) {
    for (const auto& a : d.after) {
      FUZZ_CHECK(level_of.contains(a), "[%s] after unknown '%s'", d.name.c_str(), a.c_str());
      FUZZ_CHECK(level_of[a] < level_of[d.name], "[%s] not after '%s'", d.name.c_str(), a.c_str());
    }
  }
  return 0;
}
