// The files of a worker's directory: status.json (the only place that
// reads or writes it), the lock, name claims, and the words of the states.
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "internal.hpp"

namespace tether {

namespace sd = supervise_detail;
namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------- words

std::string_view to_string(WorkerState s) noexcept {
  switch (s) {
    case WorkerState::starting:
      return "starting";
    case WorkerState::up:
      return "up";
    case WorkerState::stopping:
      return "stopping";
    case WorkerState::backoff:
      return "backoff";
    case WorkerState::down:
      return "down";
    case WorkerState::exited:
      return "exited";
    case WorkerState::dead_supervisor:
      return "dead-supervisor";
  }
  return "?";
}

std::string_view to_string(Want w) noexcept {
  switch (w) {
    case Want::up:
      return "up";
    case Want::once:
      return "once";
    case Want::down:
      return "down";
    case Want::exit:
      return "exit";
  }
  return "?";
}

std::string_view to_string(RestartPolicy p) noexcept {
  switch (p) {
    case RestartPolicy::always:
      return "always";
    case RestartPolicy::on_failure:
      return "on-failure";
    case RestartPolicy::never:
      return "never";
  }
  return "?";
}

namespace {

template <class E, int N>
std::optional<E> parse_word(std::string_view s) noexcept {
  for (int i = 0; i < N; ++i) {
    if (to_string(static_cast<E>(i)) == s) return static_cast<E>(i);
  }
  return std::nullopt;
}

}  // namespace

std::optional<WorkerState> parse_worker_state(std::string_view s) noexcept {
  return parse_word<WorkerState, 7>(s);
}
std::optional<Want> parse_want(std::string_view s) noexcept {
  return parse_word<Want, 4>(s);
}
std::optional<RestartPolicy> parse_restart_policy(std::string_view s) noexcept {
  return parse_word<RestartPolicy, 3>(s);
}

// ---------------------------------------------------------------- files

std::int64_t sd::now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<Fd> sd::open_worker_dir(int state_fd, std::string_view name) {
  std::string n(name);
  Fd fd(::openat(state_fd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return fail(errno, "open worker directory " + n);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail(errno, "open worker directory " + n);
  if (st.st_uid != ::geteuid()) return fail(EPERM, "worker directory " + n + ": not ours");
  return fd;
}

Result<std::string> sd::read_small_file(int dirfd, const char* name, std::size_t max,
                                        const fs::path& shown) {
  Fd fd(::openat(dirfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ELOOP) return fail(ELOOP, "read " + shown.string() + ": a symbolic link");
    return fail(errno, "read " + shown.string());
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail(errno, "read " + shown.string());
  if (!S_ISREG(st.st_mode)) return fail(errc::bad_record, shown.string() + ": not a regular file");
  if (st.st_uid != ::geteuid()) return fail(EPERM, shown.string() + ": not ours");
  if (static_cast<std::uint64_t>(st.st_size) > max) {
    return fail(errc::bad_record, fmt::format("{}: {} bytes, more than a record may have",
                                              shown.string(), st.st_size));
  }
  std::string text;
  char buf[4096];
  for (;;) {
    auto n = read_some(fd.get(), std::as_writable_bytes(std::span(buf)), shown.string());
    if (!n) return std::unexpected(n.error());
    if (*n == 0) break;
    text.append(buf, *n);
    if (text.size() > max) return fail(errc::bad_record, shown.string() + ": too large");
  }
  return text;
}

bool sd::lock_held(int dirfd) {
  // O_NONBLOCK: a FIFO planted as the lock must not hang a client.
  Fd fd(::openat(dirfd, kLockFile, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return false;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  // The supervisor holds LOCK_EX for its whole life; a shared lock that
  // would block means it is alive (flock(2): released when it dies).
  if (::flock(fd.get(), LOCK_SH | LOCK_NB) == 0) return false;
  return errno == EWOULDBLOCK;
}

// ---------------------------------------------------------------- status.json

std::string sd::encode_status(const WorkerInfo& w) {
  json j;
  j["id"] = w.id;
  j["name"] = w.name;
  j["state"] = to_string(w.state);
  j["want"] = to_string(w.want);
  j["pid"] = w.pid;
  j["pid_start"] = w.pid_start;
  j["supervisor_pid"] = w.supervisor_pid;
  j["since_ms"] = w.since_ms;
  j["started_ms"] = w.started_ms;
  j["restarts"] = w.restarts;
  j["commands"] = w.commands;
  j["restart"] = to_string(w.restart_policy);
  j["command"] = w.command;
  if (!w.set.empty()) j["set"] = w.set;
  if (w.last_exit_code || w.last_exit_signal) {
    json e = json::object();
    if (w.last_exit_signal) e["signal"] = *w.last_exit_signal;
    if (w.last_exit_code) e["code"] = *w.last_exit_code;
    j["last_exit"] = e;
  }
  // Never throws: bytes that are not UTF-8 (tether open refuses them in a
  // spec) would be shown as U+FFFD.
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

namespace {

// Typed field access that never throws: a field of the wrong type or range
// is an error naming it.
struct Fields {
  const json& j;
  const fs::path& shown;
  std::string bad;

  template <class Int>
  Int integer(const char* key, Int lo, Int hi) {
    auto it = j.find(key);
    if (it == j.end()) return Int{};
    if (!it->is_number_integer()) return note(key), Int{};
    if (it->is_number_unsigned()) {
      // nlohmann stores every non-negative integer as unsigned: check the
      // lower bound here too (a "signal":0 must be refused, not decoded).
      auto v = it->get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(hi) || (lo > 0 && v < static_cast<std::uint64_t>(lo))) {
        return note(key), Int{};
      }
      return static_cast<Int>(v);
    }
    auto v = it->get<std::int64_t>();
    if (v < static_cast<std::int64_t>(lo) ||
        (v > 0 && static_cast<std::uint64_t>(v) > static_cast<std::uint64_t>(hi))) {
      return note(key), Int{};
    }
    return static_cast<Int>(v);
  }
  std::string text(const char* key) {
    auto it = j.find(key);
    if (it == j.end()) return {};
    if (!it->is_string()) return note(key), std::string();
    return it->get<std::string>();
  }
  void note(const char* key) {
    if (bad.empty()) bad = key;
  }
};

}  // namespace

Result<WorkerInfo> sd::decode_status(std::string_view text, const fs::path& shown) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return fail(errc::bad_record, shown.string() + ": not a JSON object");
  }
  Fields f{j, shown, {}};
  WorkerInfo w;
  w.id = f.text("id");
  w.name = f.text("name");
  w.set = f.text("set");
  std::string state = f.text("state"), want = f.text("want"), policy = f.text("restart");
  w.pid = f.integer<pid_t>("pid", 0, 4194304);  // PID_MAX_LIMIT
  w.pid_start = f.integer<std::uint64_t>("pid_start", 0, UINT64_MAX);
  w.supervisor_pid = f.integer<pid_t>("supervisor_pid", 0, 4194304);
  w.since_ms = f.integer<std::int64_t>("since_ms", 0, INT64_MAX);
  w.started_ms = f.integer<std::int64_t>("started_ms", 0, INT64_MAX);
  w.restarts = f.integer<int>("restarts", 0, INT32_MAX);
  w.commands = f.integer<std::uint64_t>("commands", 0, UINT64_MAX);
  if (auto it = j.find("last_exit"); it != j.end()) {
    if (!it->is_object()) {
      f.note("last_exit");
    } else {
      Fields e{*it, shown, {}};
      if (it->contains("code")) w.last_exit_code = e.integer<int>("code", 0, 255);
      if (it->contains("signal")) w.last_exit_signal = e.integer<int>("signal", 1, 64);
      if (!e.bad.empty()) f.note("last_exit");
    }
  }
  if (auto it = j.find("command"); it != j.end()) {
    if (!it->is_array()) f.note("command");
    for (const auto& a : *it) {
      if (!a.is_string()) {
        f.note("command");
        break;
      }
      w.command.push_back(a.get<std::string>());
    }
  }
  auto s = parse_worker_state(state);
  auto wa = parse_want(want);
  auto p = parse_restart_policy(policy);
  if (!s || *s == WorkerState::dead_supervisor) f.note("state");
  if (!wa) f.note("want");
  if (!p) f.note("restart");
  if (!f.bad.empty()) {
    return fail(errc::bad_record,
                fmt::format("{}: field \"{}\" is missing or malformed", shown.string(), f.bad));
  }
  w.state = *s;
  w.want = *wa;
  w.restart_policy = *p;
  return w;
}

Result<WorkerInfo> sd::read_status(int dirfd, const fs::path& dir) {
  fs::path shown = dir / kStatusFile;
  auto text = read_small_file(dirfd, kStatusFile, kMaxStatus, shown);
  if (!text) return std::unexpected(text.error());
  auto w = decode_status(*text, shown);
  if (w) w->dir = dir;
  return w;
}

// ---------------------------------------------------------------- RecordFile

Result<sd::RecordFile> sd::RecordFile::create(int dirfd, std::string name, std::string spare,
                                              std::size_t reserve, bool pad) {
  RecordFile r;
  r.dirfd_ = dirfd;
  r.name_ = std::move(name);
  r.spare_ = std::move(spare);
  r.reserve_ = reserve;
  r.pad_ = pad;
  for (auto [file, fd] : {std::pair{&r.name_, &r.record_fd_}, std::pair{&r.spare_, &r.spare_fd_}}) {
    fd->reset(
        ::openat(dirfd, file->c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!*fd || ::fchmod(fd->get(), 0600) != 0) return fail(errno, "create " + *file);
    // posix_fallocate: the blocks are ours now, so a full disk later
    // cannot stop a status change (it returns the error, not errno).
    if (int err = ::posix_fallocate(fd->get(), 0, static_cast<off_t>(reserve)); err != 0) {
      return fail(err, "reserve space for " + *file);
    }
  }
  return r;
}

namespace {

// Padding comes from here, in read-only data the supervisors share, not
// from a record-sized string each one fills: a heap page touched once
// stays resident in every supervisor (docs/benchmarks.md, issue 8).
constexpr auto kSpaces = [] {
  std::array<char, 4096> a{};
  a.fill(' ');
  return a;
}();

// Writes head, then pad spaces, then a newline if asked, from offset 0 of
// fd, whole (a short write or EINTR is resumed), without first joining
// them into one buffer.
Result<void> write_record(int fd, std::string_view head, std::size_t pad, bool newline,
                          const std::string& shown) {
  const std::size_t body = head.size() + pad, total = body + (newline ? 1 : 0);
  std::size_t done = 0;
  while (done < total) {
    std::array<iovec, 8> iov{};
    std::size_t n = 0, at = done;
    auto add = [&](const char* p, std::size_t len) {
      iov[n++] = {const_cast<char*>(p), len};
      at += len;
    };
    if (at < head.size()) add(head.data() + at, head.size() - at);
    while (n + 1 < iov.size() && at < body)
      add(kSpaces.data(), std::min(body - at, kSpaces.size()));
    if (newline && at == body) add("\n", 1);
    ssize_t w = retry_eintr(
        [&] { return ::pwritev(fd, iov.data(), static_cast<int>(n), static_cast<off_t>(done)); });
    if (w < 0) return fail(errno, "write " + shown);
    if (w == 0) return fail(EIO, "write " + shown + ": nothing written");
    done += static_cast<std::size_t>(w);
  }
  return {};
}

}  // namespace

Result<void> sd::RecordFile::replace(std::string_view text) {
  std::size_t pad = 0;
  bool newline = false;
  if (pad_) {
    if (text.size() >= reserve_) {
      // Larger than reserved (a very long command line): reserve more.
      std::size_t more = (text.size() / kStatusReserve + 1) * kStatusReserve;
      for (const Fd* fd : {&spare_fd_, &record_fd_}) {
        if (int err = ::posix_fallocate(fd->get(), 0, static_cast<off_t>(more)); err != 0) {
          return fail(err, "reserve space for " + name_);
        }
      }
      reserve_ = more;
    }
    // Spaces after a JSON value are whitespace to every parser; the record
    // is always reserve_ bytes, ending in a newline.
    if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    pad = reserve_ - 1 - text.size();
    newline = true;
  } else if (text.size() != reserve_) {
    return fail(EINVAL, fmt::format("replace {}: a record of {} bytes, not {}", name_, text.size(),
                                    reserve_));
  }
  if (auto r = write_record(spare_fd_.get(), text, pad, newline, spare_); !r) return r;
  const std::size_t size = text.size() + pad + (newline ? 1 : 0);
  if (static_cast<std::size_t>(::lseek(spare_fd_.get(), 0, SEEK_END)) > size &&
      ::ftruncate(spare_fd_.get(), static_cast<off_t>(size)) != 0) {
    return fail(errno, "write " + spare_);
  }
  if (::renameat2(dirfd_, spare_.c_str(), dirfd_, name_.c_str(), RENAME_EXCHANGE) != 0) {
    return fail(errno, "replace " + name_);
  }
  std::swap(spare_fd_, record_fd_);
  return {};
}

// ---------------------------------------------------------------- identity

std::optional<sd::ProcStat> sd::read_proc_stat(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  Fd fd(::open(fmt::format("/proc/{}/stat", pid).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  char buf[1024];
  ssize_t n = retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf - 1); });
  if (n <= 0) return std::nullopt;
  std::string_view s(buf, static_cast<std::size_t>(n));
  // The command name (field 2) is in parentheses and may hold anything,
  // ')' and spaces included: fields start after the last ')'.
  auto close = s.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  s.remove_prefix(close + 1);
  // Fields 3.. : state ppid pgrp session tty_nr tpgid flags minflt cminflt
  // majflt cmajflt utime stime cutime cstime priority nice num_threads
  // itrealvalue starttime (proc(5)).
  std::uint64_t field[22] = {};
  int index = 3;
  std::size_t pos = 0;
  while (index <= 24 && pos < s.size()) {
    while (pos < s.size() && s[pos] == ' ') ++pos;
    std::size_t end = s.find(' ', pos);
    if (end == std::string_view::npos) end = s.size();
    if (index >= 4) {
      std::uint64_t v = 0;
      auto token = s.substr(pos, end - pos);
      auto r = std::from_chars(token.data(), token.data() + token.size(), v);
      if (r.ec != std::errc() && !(token.starts_with('-'))) return std::nullopt;
      field[index - 3] = v;
    }
    pos = end;
    ++index;
  }
  if (index <= 24) return std::nullopt;
  ProcStat st;
  st.ppid = static_cast<pid_t>(field[4 - 3]);
  st.pgrp = static_cast<pid_t>(field[5 - 3]);
  st.session = static_cast<pid_t>(field[6 - 3]);
  st.cpu_ticks = field[14 - 3] + field[15 - 3];
  st.reaped_ticks = field[16 - 3] + field[17 - 3];
  st.start_ticks = field[22 - 3];
  st.rss_pages = field[24 - 3];
  return st;
}

// ---------------------------------------------------------------- names

namespace {

// Holds an exclusive flock on the state directory for its scope: name
// claims are made one at a time (flock(2) works on a directory's fd).
class StateLock {
 public:
  // A new open file description, not a dup: flock(2) locks belong to the
  // description, which supervisors forked from one launcher would share.
  explicit StateLock(int state_fd)
      : fd_(::openat(state_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
    if (fd_) (void)retry_eintr([&] { return ::flock(fd_.get(), LOCK_EX); });
  }

 private:
  Fd fd_;  // closing it releases the lock
};

std::string claim_path(std::string_view name) {
  return fmt::format("{}/{}", sd::kNamesDir, name);
}

std::optional<std::string> holder_of(int state_fd, const std::string& path) {
  char target[256];
  ssize_t n = ::readlinkat(state_fd, path.c_str(), target, sizeof target - 1);
  if (n < 0) return std::nullopt;
  return std::string(target, static_cast<std::size_t>(n));
}

// A holder lives while its directory (or, while it starts, its hidden
// ".<id>.new" one) has its lock held.
bool holder_alive(int state_fd, const std::string& id) {
  for (const std::string& d : {id, "." + id + ".new"}) {
    auto dir = sd::open_worker_dir(state_fd, d);
    if (dir && sd::lock_held(dir->get())) return true;
  }
  return false;
}

}  // namespace

Result<void> sd::claim_name(int state_fd, std::string_view name, std::string_view id) {
  if (auto why = check_worker_name(name); !why.empty()) {
    return fail(EINVAL, fmt::format("claim the name '{}': {}", name, why));
  }
  StateLock lock(state_fd);
  if (::mkdirat(state_fd, kNamesDir, 0700) != 0 && errno != EEXIST) {
    return fail(errno, "create the name directory .names");
  }
  std::string path = claim_path(name);
  if (auto holder = holder_of(state_fd, path)) {
    if (*holder == id) return {};
    if (holder_alive(state_fd, *holder)) {
      return fail(EEXIST,
                  fmt::format("a worker named {} is already running (id {})", name, *holder));
    }
    (void)::unlinkat(state_fd, path.c_str(), 0);  // stale: its worker is gone
  }
  if (::symlinkat(std::string(id).c_str(), state_fd, path.c_str()) != 0) {
    return fail(errno, fmt::format("claim the name '{}'", name));
  }
  return {};
}

void sd::release_name(int state_fd, std::string_view name, std::string_view id) {
  StateLock lock(state_fd);
  std::string path = claim_path(name);
  if (auto holder = holder_of(state_fd, path); holder && *holder == id) {
    (void)::unlinkat(state_fd, path.c_str(), 0);
  }
  // The last claim gone, so is the directory (ENOTEMPTY otherwise): a state
  // directory with no worker holds nothing. Claims are made under the same
  // lock, so none is being made in it now.
  (void)::unlinkat(state_fd, kNamesDir, AT_REMOVEDIR);
}

std::string check_worker_name(std::string_view name) {
  if (name.empty()) return "a name cannot be empty";
  if (name.size() > 64) return "at most 64 characters";
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '+' || c == '@' || c == ':';
    if (!ok) return "only letters, digits and . _ - + @ : are allowed";
  }
  if (name.front() == '.' || name.front() == '-') return "it cannot start with '.' or '-'";
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  auto hex = [&](char c) { return digit(c) || (c >= 'a' && c <= 'f'); };
  if (std::all_of(name.begin(), name.end(), digit)) return "only digits would read as a pid";
  if (name.size() == 8 && std::all_of(name.begin(), name.end(), hex)) {
    return "8 hex digits would read as a worker id";
  }
  return "";
}

}  // namespace tether
