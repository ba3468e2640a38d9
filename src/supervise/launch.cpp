// Both ends of the launch and report protocols (include/tether/supervise/launch.hpp).
#include "tether/supervise/launch.hpp"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace tether::launch {

using nlohmann::json;

namespace {

json spec_json(const SupervisorSpec& spec) {
  return {{"id", spec.id},
          {"name", spec.name},
          {"unique_name", spec.unique_name},
          {"command", spec.command},
          {"env", spec.env},
          {"cwd", spec.cwd.string()},
          {"restart", to_string(spec.restart)},
          {"max_restarts", spec.max_restarts},
          {"grace_ms", spec.grace.count()},
          {"healthy_after_ms", spec.healthy_after.count()},
          {"backoff_min_ms", spec.backoff_min.count()},
          {"backoff_max_ms", spec.backoff_max.count()},
          {"wait_ready", spec.wait_ready},
          {"tty", spec.tty},
          {"ready_fd", spec.ready_fd},
          {"log_max_bytes", spec.log_max_bytes},
          {"dir_check_ms", spec.dir_check.count()},
          {"log_keep", spec.log_keep},
          {"memory_limit_bytes", spec.memory_limit},
          {"memory_check_ms", spec.memory_check.count()},
          {"start_down", spec.start_down},
          {"set", spec.set},
          {"definition", spec.definition},
          {"after", spec.after}};
}

Result<SupervisorSpec> spec_from(const json& j) {
  auto bad = [](std::string_view why) {
    return fail(errc::bad_record, fmt::format("supervisor spec: {}", why));
  };
  if (!j.is_object()) return bad("not a JSON object");
  auto str = [&](const char* k, std::string& out) {
    auto it = j.find(k);
    if (it == j.end() || !it->is_string()) return false;
    out = it->get<std::string>();
    return true;
  };
  auto num = [&](const char* k, long long lo, long long hi, long long& out) {
    auto it = j.find(k);
    if (it == j.end() || !it->is_number_integer()) return false;
    if (it->is_number_unsigned() &&
        it->get<unsigned long long>() > static_cast<unsigned long long>(hi)) {
      return false;
    }
    out = it->get<long long>();
    return out >= lo && out <= hi;
  };
  auto flag = [&](const char* k, bool& out) {
    auto it = j.find(k);
    if (it == j.end() || !it->is_boolean()) return false;
    out = it->get<bool>();
    return true;
  };
  SupervisorSpec spec;
  std::string cwd, restart;
  long long max_restarts = 0, grace = 0, healthy = 0, bmin = 0, bmax = 0, ready_fd = 0, log_max = 0,
            log_keep = 0, dir_check = 0;
  if (!str("id", spec.id) || !str("name", spec.name) || !str("cwd", cwd) ||
      !str("restart", restart) || !flag("unique_name", spec.unique_name) ||
      !flag("wait_ready", spec.wait_ready) || !flag("tty", spec.tty) ||
      !num("max_restarts", -1, 1 << 30, max_restarts) || !num("grace_ms", 0, 86400000, grace) ||
      !num("healthy_after_ms", 0, 86400000, healthy) || !num("backoff_min_ms", 1, 86400000, bmin) ||
      !num("backoff_max_ms", 1, 86400000, bmax) || !num("ready_fd", 3, 1023, ready_fd) ||
      !num("log_max_bytes", 4096, 1LL << 40, log_max) || !num("log_keep", 0, 100, log_keep) ||
      !num("dir_check_ms", 10, 86400000, dir_check)) {
    return bad("a field is missing, of the wrong type or out of range");
  }
  auto cmd = j.find("command");
  if (cmd == j.end() || !cmd->is_array() || cmd->empty()) return bad("no command");
  for (const auto& a : *cmd) {
    if (!a.is_string()) return bad("a command word is not a string");
    spec.command.push_back(a.get<std::string>());
  }
  auto env = j.find("env");
  if (env == j.end() || !env->is_array()) return bad("no env");
  for (const auto& e : *env) {
    if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_string()) {
      return bad("env holds something else than [name, value] pairs");
    }
    spec.env.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
  }
  // A set's labels (absent from the specs of `tether open`).
  for (auto [key, out] : {std::pair{"set", &spec.set}, std::pair{"definition", &spec.definition}}) {
    if (auto it = j.find(key); it != j.end()) {
      if (!it->is_string()) return bad(fmt::format("\"{}\" is not a string", key));
      *out = it->get<std::string>();
    }
  }
  // The memory limit (absent from the specs of tether 0.x before it).
  long long memory_limit = 0, memory_check = 1000;
  if ((j.contains("memory_limit_bytes") &&
       !num("memory_limit_bytes", 0, 1LL << 50, memory_limit)) ||
      (j.contains("memory_check_ms") && !num("memory_check_ms", 10, 86400000, memory_check))) {
    return bad("the memory limit or its check interval is of the wrong type or out of range");
  }
  // Down at start (absent before tether had it).
  if (j.contains("start_down") && !flag("start_down", spec.start_down)) {
    return bad("\"start_down\" is not a boolean");
  }
  spec.memory_limit = static_cast<std::uint64_t>(memory_limit);
  spec.memory_check = std::chrono::milliseconds(memory_check);
  if (auto it = j.find("after"); it != j.end()) {
    if (!it->is_array()) return bad("\"after\" is not an array");
    for (const auto& a : *it) {
      if (!a.is_string()) return bad("an \"after\" entry is not a string");
      spec.after.push_back(a.get<std::string>());
    }
  }
  auto policy = parse_restart_policy(restart);
  if (!policy) return bad("unknown restart policy");
  spec.restart = *policy;
  spec.cwd = cwd;
  using ms = std::chrono::milliseconds;
  spec.max_restarts = static_cast<int>(max_restarts);
  spec.grace = ms(grace);
  spec.healthy_after = ms(healthy);
  spec.backoff_min = ms(bmin);
  spec.backoff_max = ms(bmax);
  spec.ready_fd = static_cast<int>(ready_fd);
  spec.log_max_bytes = static_cast<std::uint64_t>(log_max);
  spec.log_keep = static_cast<int>(log_keep);
  spec.dir_check = ms(dir_check);
  if (spec.id.empty() || spec.id.size() > 64 || spec.id.find('/') != std::string::npos ||
      spec.id.starts_with('.')) {
    return bad("bad id");
  }
  if (spec.unique_name) {
    if (auto why = check_worker_name(spec.name); !why.empty()) return bad("bad name: " + why);
  }
  return spec;
}

// Printable and short: a report line must stay under PIPE_BUF.
std::string printable(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i == 3000) {  // cut, and said to be
      out += "…";
      break;
    }
    auto u = static_cast<unsigned char>(s[i]);
    out += (u >= 0x20 && u != 0x7f) ? s[i] : ' ';
  }
  return out;
}

std::optional<pid_t> parse_pid(std::string_view s) {
  pid_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v <= 0) return std::nullopt;
  return v;
}

}  // namespace

namespace {

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = c < 0x80           ? 1
                      : (c >> 5) == 0x6  ? 2
                      : (c >> 4) == 0xe  ? 3
                      : (c >> 3) == 0x1e ? 4
                                         : 0;
    if (len == 0 || i + len > s.size()) return false;
    std::uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
    for (std::size_t k = 1; k < len; ++k) {
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 0x2) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    // Overlong forms, surrogates and values beyond U+10FFFF are not UTF-8.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
      return false;
    }
    i += len;
  }
  return true;
}

}  // namespace

std::string spec_problem(const SupervisorSpec& spec) {
  if (!valid_utf8(spec.name)) return "the name";
  for (std::size_t i = 0; i < spec.command.size(); ++i) {
    if (!valid_utf8(spec.command[i])) {
      return i == 0 ? std::string("the program") : fmt::format("the command's word {}", i);
    }
  }
  for (const auto& [k, v] : spec.env) {
    if (!valid_utf8(k) || !valid_utf8(v)) return "--env " + (valid_utf8(k) ? k : std::string("…"));
  }
  if (!valid_utf8(spec.cwd.string())) return "--cwd";
  if (!valid_utf8(spec.set) || !valid_utf8(spec.definition)) return "the set's name";
  for (const auto& a : spec.after) {
    if (!valid_utf8(a)) return "an \"after\" entry";
  }
  return "";
}

std::string encode_spec(const SupervisorSpec& spec) {
  return spec_json(spec).dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<SupervisorSpec> decode_spec(std::string_view text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return fail(errc::bad_record, "supervisor spec: not JSON");
  return spec_from(j);
}

std::string encode_launch(const Launch& launch) {
  std::string out = json({{"state_dir", launch.state_dir.string()}, {"specs", launch.specs.size()}})
                        .dump(-1, ' ', false, json::error_handler_t::replace);
  out += '\n';
  for (const auto& s : launch.specs) {
    out += encode_spec(s);
    out += '\n';
  }
  return out;
}

Result<LaunchLines> split_launch(std::string_view text) {
  if (text.size() > kMaxLaunch) return fail(errc::bad_record, "launch: too large");
  auto nl = text.find('\n');
  if (nl == std::string_view::npos) return fail(errc::bad_record, "launch: no header line");
  auto head = json::parse(text.substr(0, nl), nullptr, false);
  if (head.is_discarded() || !head.is_object() || !head.contains("state_dir") ||
      !head["state_dir"].is_string() || !head.contains("specs") ||
      !head["specs"].is_number_unsigned()) {
    return fail(errc::bad_record, "launch: bad header line");
  }
  LaunchLines out;
  out.state_dir = head["state_dir"].get<std::string>();
  auto count = head["specs"].get<std::size_t>();
  text.remove_prefix(nl + 1);
  // One allocation of the right size (a vector grown by doubling leaves
  // free chunks behind, which the launcher's children then write into:
  // docs/benchmarks.md); a count beyond the lines the text can hold is not
  // believed.
  out.specs.reserve(std::min(count, text.size() / 2 + 1));
  while (!text.empty()) {
    nl = text.find('\n');
    if (nl == std::string_view::npos) return fail(errc::bad_record, "launch: a cut spec line");
    out.specs.push_back(text.substr(0, nl));
    text.remove_prefix(nl + 1);
  }
  if (out.specs.size() != count || count == 0) {
    return fail(errc::bad_record,
                fmt::format("launch: {} specs announced, {} came", count, out.specs.size()));
  }
  return out;
}

Result<Launch> decode_launch(std::string_view text) {
  auto lines = split_launch(text);
  if (!lines) return std::unexpected(lines.error());
  Launch launch;
  launch.state_dir = std::move(lines->state_dir);
  for (auto line : lines->specs) {
    auto spec = decode_spec(line);
    if (!spec) return std::unexpected(spec.error());
    launch.specs.push_back(std::move(*spec));
  }
  return launch;
}

std::string encode_report(const Report& r) {
  switch (r.kind) {
    case Report::Kind::forked:
      return fmt::format("{} forked {}\n", r.id, r.supervisor);
    case Report::Kind::ok:
      return fmt::format("{} ok {} {}\n", r.id, r.worker, r.supervisor);
    case Report::Kind::error:
      break;
  }
  return fmt::format("{} error {}\n", r.id, printable(r.text));
}

Result<Report> decode_report(std::string_view line) {
  auto bad = [&] {
    return fail(errc::bad_record,
                fmt::format("supervisor report '{}'", printable(line.substr(0, 80))));
  };
  auto sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || sp1 == 0) return bad();
  auto sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return bad();
  Report r;
  r.id = std::string(line.substr(0, sp1));
  auto verb = line.substr(sp1 + 1, sp2 - sp1 - 1);
  auto rest = line.substr(sp2 + 1);
  if (verb == "error") {
    r.kind = Report::Kind::error;
    r.text = std::string(rest);
    return r;
  }
  if (verb == "forked") {
    auto pid = parse_pid(rest);
    if (!pid) return bad();
    r.kind = Report::Kind::forked;
    r.supervisor = *pid;
    return r;
  }
  if (verb == "ok") {
    auto sp = rest.find(' ');
    if (sp == std::string_view::npos) return bad();
    // Worker 0: started down (SupervisorSpec::start_down), no worker yet.
    auto w = rest.substr(0, sp) == "0" ? std::optional<pid_t>(0) : parse_pid(rest.substr(0, sp));
    auto s = parse_pid(rest.substr(sp + 1));
    if (!w || !s) return bad();
    r.kind = Report::Kind::ok;
    r.worker = *w;
    r.supervisor = *s;
    return r;
  }
  return bad();
}

}  // namespace tether::launch
