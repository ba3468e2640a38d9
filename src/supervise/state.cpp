// The clients' side of the supervisor: the state directory, worker records,
// commands through the control FIFO, waiting for effects, and the worker's
// inbox. See include/tether/supervise.hpp.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "internal.hpp"
#include "tether/process.hpp"

namespace tether {

namespace sd = supervise_detail;
namespace fs = std::filesystem;

// ---------------------------------------------------------------- shared pieces

std::int64_t sd::now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool sd::lock_held(const fs::path& worker_dir) {
  Fd fd(::open((worker_dir / kLockFile).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return false;
  // The supervisor holds LOCK_EX for its whole life; a shared lock that
  // would block means it is alive (flock(2): released when it dies).
  if (::flock(fd.get(), LOCK_SH | LOCK_NB) == 0) return false;
  return errno == EWOULDBLOCK;
}

Result<WorkerInfo> sd::read_status(const fs::path& worker_dir) {
  fs::path file = worker_dir / kStatusFile;
  Fd fd(::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return fail(errno, "read " + file.string());
  std::string text;
  char buf[4096];
  for (;;) {
    auto n = read_some(fd.get(), std::as_writable_bytes(std::span(buf)), file.string());
    if (!n) return std::unexpected(n.error());
    if (*n == 0) break;
    text.append(buf, *n);
  }
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(EBADMSG, "parse " + file.string());
  WorkerInfo w;
  w.dir = worker_dir;
  w.id = j.value("id", worker_dir.filename().string());
  w.name = j.value("name", "");
  w.state = j.value("state", "");
  w.want = j.value("want", "");
  w.pid = j.value("pid", 0);
  w.supervisor_pid = j.value("supervisor_pid", 0);
  w.since_ms = j.value("since_ms", std::int64_t{0});
  w.started_ms = j.value("started_ms", std::int64_t{0});
  w.restarts = j.value("restarts", 0);
  w.restart_policy = j.value("restart", "");
  if (auto it = j.find("last_exit"); it != j.end() && it->is_object()) {
    if (it->contains("code")) w.last_exit_code = (*it)["code"].get<int>();
    if (it->contains("signal")) w.last_exit_signal = (*it)["signal"].get<int>();
  }
  if (auto it = j.find("command"); it != j.end() && it->is_array()) {
    for (const auto& a : *it) w.command.push_back(a.get<std::string>());
  }
  return w;
}

Result<void> sd::write_atomically(const fs::path& path, std::string_view text) {
  fs::path tmp = path;
  tmp += ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return fail(errno, "write " + tmp.string());
  std::size_t done = 0;
  while (done < text.size()) {
    auto n = write_some(fd.get(), std::as_bytes(std::span(text.substr(done))), tmp.string());
    if (!n) return std::unexpected(n.error());
    done += *n;
  }
  if (auto c = fd.close(); !c) return c;
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail(errno, "replace " + path.string());
  return {};
}

std::chrono::milliseconds WorkerInfo::uptime() const {
  if (started_ms == 0 || pid == 0) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(std::max<std::int64_t>(0, sd::now_ms() - started_ms));
}

fs::path WorkerInfo::log_path() const {
  return dir / sd::kLogFile;
}

std::string WorkerInfo::last_exit() const {
  if (last_exit_signal) return "killed by " + signal_name(*last_exit_signal);
  if (last_exit_code) return fmt::format("exited with code {}", *last_exit_code);
  return "";
}

// ---------------------------------------------------------------- state directory

fs::path StateDir::default_path() {
  if (const char* d = std::getenv("TETHER_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return fs::path(x) / "tether";
  if (::geteuid() == 0) return "/run/tether";
  return fmt::format("/tmp/tether-{}", ::geteuid());
}

Result<StateDir> StateDir::open(fs::path path, bool create) {
  std::string what = "state directory " + path.string();
  if (create && ::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return fail(errno, what);
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return fail(errno, what);
  if (S_ISLNK(st.st_mode)) return fail(ELOOP, what + ": is a symbolic link (refused)");
  if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR, what);
  if (st.st_uid != ::geteuid()) {
    return fail(EACCES, fmt::format("{}: owned by uid {}, not by you (uid {})", what, st.st_uid,
                                    ::geteuid()));
  }
  if ((st.st_mode & 077) != 0) {
    return fail(EACCES, fmt::format("{}: mode {:04o} lets other users in (it must be 0700)", what,
                                    st.st_mode & 07777));
  }
  StateDir d;
  d.path_ = std::move(path);
  return d;
}

// ---------------------------------------------------------------- records

Result<std::vector<WorkerInfo>> list_workers(const StateDir& dir) {
  std::vector<WorkerInfo> out;
  std::error_code ec;
  fs::directory_iterator it(dir.path(), ec);
  if (ec) return std::unexpected(Error(ec, "list " + dir.path().string()));
  for (const auto& entry : it) {
    std::string id = entry.path().filename().string();
    // ".<id>.new": a supervisor still setting up (or one that died doing so).
    if (id.starts_with('.') || !entry.is_directory(ec) || entry.is_symlink(ec)) continue;
    bool alive = sd::lock_held(entry.path());
    auto w = sd::read_status(entry.path());
    if (!w) {
      if (alive) continue;  // not written yet
      WorkerInfo stale;
      stale.id = id;
      stale.dir = entry.path();
      w = std::move(stale);
    }
    w->supervisor_alive = alive;
    if (!alive) {
      w->state = "dead-supervisor";
      w->started_ms = 0;  // no uptime to show
    }
    out.push_back(std::move(*w));
  }
  std::sort(out.begin(), out.end(), [](const WorkerInfo& a, const WorkerInfo& b) {
    return std::tie(a.name, a.id) < std::tie(b.name, b.id);
  });
  return out;
}

Result<WorkerInfo> find_worker(const StateDir& dir, std::string_view key) {
  // By id: one directory, not a scan of them all.
  if (!key.empty() && !key.starts_with('.') && key.find('/') == std::string_view::npos) {
    fs::path one = dir.worker_path(key);
    if (auto w = sd::read_status(one); w && w->id == key) {
      w->supervisor_alive = sd::lock_held(one);
      if (!w->supervisor_alive) w->state = "dead-supervisor";
      return w;
    }
  }
  auto all = list_workers(dir);
  if (!all) return std::unexpected(all.error());
  const WorkerInfo* found = nullptr;
  for (const auto& w : *all) {
    bool match = w.id == key || w.name == key || (w.pid > 0 && std::to_string(w.pid) == key) ||
                 (w.supervisor_pid > 0 && std::to_string(w.supervisor_pid) == key);
    // A live worker wins over a dead one of the same name.
    if (match && (!found || (w.supervisor_alive && !found->supervisor_alive))) found = &w;
  }
  if (found) return *found;
  bool digits = !key.empty() &&
                std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
  return fail(ESRCH, digits ? fmt::format("no worker with pid {}", key)
                            : fmt::format("no worker with id or name '{}'", key));
}

static std::string display_name(const WorkerInfo& w) {
  return w.name.empty() || w.name == w.id ? w.id : w.name + " (" + w.id + ")";
}

Result<void> send_command(const WorkerInfo& worker, std::string_view line, Deadline deadline) {
  std::string who = "worker " + display_name(worker);
  if (line.size() + 1 > sd::kMaxCommand || line.find('\n') != std::string_view::npos) {
    return fail(EINVAL, fmt::format("send a command to {}: a command is one line of less than "
                                    "{} bytes",
                                    who, sd::kMaxCommand));
  }
  auto not_running = [&] {
    return fail(ENXIO, who + " is not running (its supervisor is not listening)");
  };
  if (!worker.supervisor_alive) return not_running();
  fs::path fifo = worker.dir / sd::kControlFifo;
  // Non-blocking open: with no reader (no supervisor) it fails with ENXIO at
  // once instead of waiting (fifo(7)).
  Fd fd(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENXIO) return not_running();
    return fail(errno, "open " + fifo.string() + " for writing");
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISFIFO(st.st_mode) || st.st_uid != ::geteuid()) {
    return fail(EPERM, fifo.string() + ": not a FIFO of ours (refused)");
  }
  std::string text(line);
  text += '\n';
  for (;;) {
    auto n = write_some(fd.get(), std::as_bytes(std::span(text)), fifo.string());
    if (n) {
      if (*n == text.size()) return {};
      return fail(EIO, "write to " + fifo.string() + ": short write");  // cannot happen < PIPE_BUF
    }
    if (n.error() == std::errc::broken_pipe) return not_running();
    if (n.error() != std::errc::resource_unavailable_try_again) return std::unexpected(n.error());
    // The FIFO is full (a flood): wait for the supervisor to drain it.
    if (auto w = wait_fd(fd.get(), POLLOUT, deadline, "control FIFO of " + who); !w) {
      return std::unexpected(w.error());
    }
  }
}

namespace {

Result<Fd> pidfd_of(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return fail(errno, fmt::format("pidfd_open {}", pid));
  return Fd(fd);
}

}  // namespace

Result<void> exit_worker(const WorkerInfo& worker, Deadline deadline, bool wait) {
  std::error_code ec;
  // A supervisor renames its directory away (atomically) only once its
  // worker is gone, so a missing directory means "stopped".
  auto gone = [&] { return !fs::exists(worker.dir, ec); };
  auto not_running = [&] {
    return fail(ENXIO, "worker " + display_name(worker) +
                           " is not running (its supervisor is not listening)");
  };
  // The pidfd first, then the lock: if the lock is held after the pidfd
  // exists, the pidfd is the live supervisor's (not a recycled pid's).
  auto pidfd = pidfd_of(worker.supervisor_pid);
  if (!pidfd) {
    if (pidfd.error() != std::errc::no_such_process) return std::unexpected(pidfd.error());
    return gone() ? Result<void>() : not_running();
  }
  if (!sd::lock_held(worker.dir)) return gone() ? Result<void>() : not_running();
  if (auto sent = send_command(worker, "exit", deadline); !sent) {
    if (sent.error() != std::errc::no_such_device_or_address) return sent;
    if (gone()) return {};  // another client's exit got there first
  }
  if (!wait) return {};
  auto r = wait_fd(pidfd->get(), POLLIN, deadline,
                   fmt::format("the supervisor of worker {} to end", display_name(worker)));
  if (!r) return std::unexpected(r.error());
  return {};
}

Result<WorkerInfo> wait_worker_state(const WorkerInfo& worker, std::string_view state,
                                     Deadline deadline, pid_t not_pid) {
  Fd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!in) return fail(errno, "inotify_init1");
  // status.json is replaced by rename: IN_MOVED_TO on the directory.
  if (::inotify_add_watch(in.get(), worker.dir.c_str(), IN_MOVED_TO | IN_DELETE_SELF) < 0) {
    return fail(errno, "watch " + worker.dir.string());
  }
  Fd pidfd;
  if (auto p = pidfd_of(worker.supervisor_pid); p) pidfd = std::move(*p);
  std::string who = "worker " + display_name(worker);
  for (;;) {
    auto w = sd::read_status(worker.dir);
    if (w && w->state == state && (not_pid == 0 || w->pid != not_pid)) {
      w->supervisor_alive = true;
      return w;
    }
    if (!sd::lock_held(worker.dir)) {
      return fail(ESRCH,
                  fmt::format("{}: the supervisor ended before the worker was {}", who, state));
    }
    pollfd fds[2] = {{in.get(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
    auto n = poll_fds(std::span(fds, pidfd ? 2 : 1), deadline);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) {
      return fail(ETIMEDOUT, fmt::format("wait for {} to be {} (it is {})", who, state,
                                         w ? w->state : "unknown"));
    }
    char buf[4096];
    while (::read(in.get(), buf, sizeof buf) > 0) {
    }
  }
}

Result<void> prune_worker(const WorkerInfo& worker) {
  std::string who = "worker " + display_name(worker);
  if (sd::lock_held(worker.dir)) {
    return fail(EBUSY, who + " is running; `tether exit " + worker.id + "` stops it");
  }
  // The worker led its own process group; its supervisor's death killed it
  // (PR_SET_PDEATHSIG), but members of its group may remain.
  if (worker.pid > 0 && ::kill(-worker.pid, SIGKILL) != 0 && errno != ESRCH) {
    return fail(errno, fmt::format("kill what is left of {} (process group {})", who, worker.pid));
  }
  std::error_code ec;
  fs::remove_all(worker.dir, ec);
  if (ec) return std::unexpected(Error(ec, "remove " + worker.dir.string()));
  return {};
}

// ---------------------------------------------------------------- the spec

std::string encode_spec(const SupervisorSpec& spec) {
  nlohmann::json j = {{"id", spec.id},
                      {"name", spec.name},
                      {"command", spec.command},
                      {"env", spec.env},
                      {"cwd", spec.cwd.string()},
                      {"restart", spec.restart == RestartPolicy::always  ? "always"
                                  : spec.restart == RestartPolicy::never ? "never"
                                                                         : "on-failure"},
                      {"max_restarts", spec.max_restarts},
                      {"grace_ms", spec.grace.count()},
                      {"healthy_after_ms", spec.healthy_after.count()},
                      {"backoff_min_ms", spec.backoff_min.count()},
                      {"backoff_max_ms", spec.backoff_max.count()},
                      {"wait_ready", spec.wait_ready},
                      {"ready_fd", spec.ready_fd},
                      {"log_max_bytes", spec.log_max_bytes},
                      {"log_keep", spec.log_keep}};
  return j.dump();
}

Result<SupervisorSpec> decode_spec(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(EINVAL, "supervisor spec: not a JSON object");
  SupervisorSpec spec;
  try {
    using ms = std::chrono::milliseconds;
    spec.id = j.at("id");
    spec.name = j.at("name");
    spec.command = j.at("command").get<std::vector<std::string>>();
    spec.env = j.at("env").get<std::vector<std::pair<std::string, std::string>>>();
    spec.cwd = j.at("cwd").get<std::string>();
    std::string r = j.at("restart");
    spec.restart = r == "always"  ? RestartPolicy::always
                   : r == "never" ? RestartPolicy::never
                                  : RestartPolicy::on_failure;
    spec.max_restarts = j.at("max_restarts");
    spec.grace = ms(j.at("grace_ms").get<long>());
    spec.healthy_after = ms(j.at("healthy_after_ms").get<long>());
    spec.backoff_min = ms(j.at("backoff_min_ms").get<long>());
    spec.backoff_max = ms(j.at("backoff_max_ms").get<long>());
    spec.wait_ready = j.at("wait_ready");
    spec.ready_fd = j.at("ready_fd");
    spec.log_max_bytes = j.at("log_max_bytes");
    spec.log_keep = j.at("log_keep");
  } catch (const nlohmann::json::exception& e) {
    return fail(EINVAL, std::string("supervisor spec: ") + e.what());
  }
  if (spec.id.empty() || spec.id.find('/') != std::string::npos || spec.id.starts_with('.') ||
      spec.command.empty()) {
    return fail(EINVAL, "supervisor spec: bad id or empty command");
  }
  return spec;
}

// ---------------------------------------------------------------- the worker's inbox

Result<std::string> WorkerInbox::next(Deadline deadline) {
  for (;;) {
    if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    if (eof_) {
      if (buffer_.empty()) return fail(errc::end_of_stream, "read the worker's input");
      return std::exchange(buffer_, {});
    }
    if (auto w = wait_fd(fd_, POLLIN, deadline, "the worker's input"); !w) {
      return std::unexpected(w.error());
    }
    char buf[4096];
    ssize_t n = retry_eintr([&] { return ::read(fd_, buf, sizeof buf); });
    if (n < 0) {
      if (errno == EAGAIN) continue;
      return fail(errno, "read the worker's input");
    }
    if (n == 0) eof_ = true;
    buffer_.append(buf, static_cast<std::size_t>(n));
  }
}

Result<std::optional<std::string>> WorkerInbox::poll(Deadline wait) {
  auto line = next(wait);
  if (line) return std::optional<std::string>(std::move(*line));
  if (line.error() == std::errc::timed_out) return std::optional<std::string>();
  return std::unexpected(line.error());
}

Result<void> WorkerInbox::notify_ready() {
  const char* v = std::getenv("TETHER_READY_FD");
  if (!v || !*v) return {};
  int fd = -1;
  auto [end, ec] = std::from_chars(v, v + std::strlen(v), fd);
  if (ec != std::errc() || *end != '\0' || fd < 0) {
    return fail(EINVAL, fmt::format("TETHER_READY_FD='{}': not a descriptor", v));
  }
  Fd owned(fd);
  const char line[] = "ready\n";
  auto n = write_some(fd, std::as_bytes(std::span(line, sizeof line - 1)), "the readiness fd");
  if (!n) return std::unexpected(n.error());
  ::unsetenv("TETHER_READY_FD");
  return owned.close();
}

// ---------------------------------------------------------------- the demo worker

int run_demo_worker(std::optional<std::chrono::milliseconds> poll_interval) {
  // SIGTERM and SIGINT arrive as a descriptor, next to the input.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  Fd sig(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  auto say = [](const std::string& text) {
    std::string line = text + "\n";
    (void)write_some(1, std::as_bytes(std::span(line)), "stdout");
  };
  say(poll_interval
          ? fmt::format("demo worker {} started (non-blocking: polls its input every "
                        "{} ms)",
                        ::getpid(), poll_interval->count())
          : fmt::format("demo worker {} started (blocking: waits for a command)", ::getpid()));
  (void)WorkerInbox::notify_ready();
  WorkerInbox inbox = WorkerInbox::standard_input();
  for (;;) {
    pollfd fds[2] = {{0, POLLIN, 0}, {sig.get(), POLLIN, 0}};
    Deadline wait = poll_interval ? Deadline(*poll_interval) : Deadline::never();
    auto n = poll_fds(fds, wait);
    if (!n) {
      say("poll failed: " + n.error().message());
      return 1;
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo si{};
      (void)::read(sig.get(), &si, sizeof si);
      say(fmt::format("got {}: exiting", signal_name(static_cast<int>(si.ssi_signo))));
      return 0;
    }
    if (*n == 0) {
      say("FIFO is empty");
      continue;
    }
    // Take every complete line that arrived.
    for (;;) {
      auto line = inbox.next(Deadline::immediate());
      if (!line) {
        if (line.error() == errc::end_of_stream) {
          say("input closed: exiting");
          return 0;
        }
        break;  // nothing more for now
      }
      say("received: " + *line);
      if (*line == "exit") {
        say("exit requested: bye");
        return 0;
      }
    }
  }
}

}  // namespace tether
