// The clients' side of the supervisor: the state directory, worker records,
// commands through the control FIFO, waiting for effects, pruning. Every
// file is reached relative to the state directory's descriptor, held open
// since it was checked (see StateDir).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "internal.hpp"
#include "tether/channel/fifo.hpp"
#include "tether/supervise/launch.hpp"

namespace tether {

namespace sd = supervise_detail;
namespace fs = std::filesystem;

// ---------------------------------------------------------------- records

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

std::string WorkerInfo::display_name() const {
  return name.empty() || name == id ? id : name + " (" + id + ")";
}

// ---------------------------------------------------------------- state directory

namespace {

// Every ancestor of a state directory: a directory owned by root or by us,
// and not writable by others unless sticky (others may add entries to
// /tmp, but not rename or remove ours).
Result<Fd> open_checked_parent(const fs::path& parent, const std::string& what) {
  std::error_code ec;
  fs::path real = fs::canonical(parent, ec);
  if (ec) return std::unexpected(Error(ec, what + ": its parent " + parent.string()));
  Fd fd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail(errno, what);
  fs::path walked = "/";
  auto check = [&](const Fd& d) -> Result<void> {
    struct stat st {};
    if (::fstat(d.get(), &st) != 0) return fail(errno, what);
    if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
      return fail(EACCES, fmt::format("{}: {} belongs to uid {}, who could replace what is "
                                      "inside (refused)",
                                      what, walked.string(), st.st_uid));
    }
    if ((st.st_mode & 022) != 0 && (st.st_mode & S_ISVTX) == 0) {
      return fail(EACCES, fmt::format("{}: {} is writable by others (mode {:04o}) and not sticky "
                                      "(refused)",
                                      what, walked.string(), st.st_mode & 07777));
    }
    return {};
  };
  if (auto r = check(fd); !r) return std::unexpected(r.error());
  for (const auto& part : real.relative_path()) {
    walked /= part;
    Fd next(::openat(fd.get(), part.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next) return fail(errno, what + ": " + walked.string());
    if (auto r = check(next); !r) return std::unexpected(r.error());
    fd = std::move(next);
  }
  return fd;
}

}  // namespace

fs::path StateDir::default_path() {
  auto absolute = [](const fs::path& p) {
    std::error_code ec;
    auto a = fs::absolute(p, ec);
    return ec ? p : a.lexically_normal();
  };
  if (const char* d = std::getenv("TETHER_DIR"); d && *d) return absolute(d);
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) {
    return absolute(fs::path(x) / "tether");
  }
  if (::geteuid() == 0) return "/run/tether";
  return fmt::format("/tmp/tether-{}", ::geteuid());
}

Result<StateDir> StateDir::open_default(bool create) {
  fs::path primary = default_path();
  bool in_tmp = primary == fs::path(fmt::format("/tmp/tether-{}", ::geteuid()));
  if (!in_tmp) return open(primary, create);
  std::vector<fs::path> candidates = {primary};
  for (int i = 1; i <= 3; ++i) candidates.push_back(primary.string() + "." + std::to_string(i));
  for (const auto& c : candidates) {
    if (auto d = open(c, false)) return d;
  }
  std::optional<Error> first;
  for (const auto& c : candidates) {
    auto d = open(c, create);
    if (d) return d;
    if (!first) first = d.error();
  }
  return std::unexpected(*first);
}

StateDir StateDir::adopt(Fd fd, fs::path path) noexcept {
  StateDir d;
  d.path_ = std::move(path);
  d.fd_ = std::make_shared<Fd>(std::move(fd));
  return d;
}

Result<StateDir> StateDir::open(fs::path path, bool create) {
  auto d = sd::open_owned_directory(std::move(path), create, "state directory", 077, "TETHER_DIR");
  if (!d) return std::unexpected(d.error());
  return adopt(std::move(d->first), std::move(d->second));
}

Result<std::pair<Fd, fs::path>> sd::open_owned_directory(fs::path path, bool create,
                                                         std::string_view kind, mode_t forbidden,
                                                         std::string_view variable) {
  {
    std::error_code ec;
    auto a = fs::absolute(path, ec);
    if (!ec) path = a.lexically_normal();
  }
  if (path.filename().empty()) path = path.parent_path();  // a trailing slash
  std::string what = fmt::format("{} {}", kind, path.string());
  auto parent = open_checked_parent(path.parent_path(), what);
  if (!parent) return std::unexpected(parent.error());
  std::string last = path.filename().string();
  bool made = false;
  if (create) {
    if (::mkdirat(parent->get(), last.c_str(), 0700) == 0) {
      made = true;
    } else if (errno != EEXIST) {
      return fail(errno, what);
    }
  }
  auto not_ours = [&](uid_t uid) {
    return fail(EACCES, fmt::format("{}: owned by uid {}, not by you (uid {}); set {} to a "
                                    "directory of yours",
                                    what, uid, ::geteuid(), variable));
  };
  Fd fd(::openat(parent->get(), last.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    struct stat st {};
    if (::fstatat(parent->get(), last.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (S_ISLNK(st.st_mode)) return fail(ELOOP, what + ": is a symbolic link (refused)");
      if (st.st_uid != ::geteuid()) return not_ours(st.st_uid);
    }
    return fail(err, what);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail(errno, what);
  if (st.st_uid != ::geteuid()) return not_ours(st.st_uid);
  // Made by us: exactly 0700 whatever the umask.
  if (made && (st.st_mode & 07777) != 0700) {
    if (::fchmod(fd.get(), 0700) != 0) return fail(errno, what);
    st.st_mode = (st.st_mode & ~07777u) | 0700;
  }
  if ((st.st_mode & forbidden) != 0) {
    return fail(EACCES, fmt::format("{}: mode {:04o} lets other users {} (chmod {:o} it)", what,
                                    st.st_mode & 07777, forbidden == 077 ? "in" : "write in it",
                                    st.st_mode & 0777 & ~forbidden));
  }
  return std::pair<Fd, fs::path>(std::move(fd), std::move(path));
}

// ---------------------------------------------------------------- listing

namespace {

// The names in the state directory, read through its descriptor.
Result<std::vector<std::string>> entries(const StateDir& dir) {
  int copy = ::openat(dir.fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (copy < 0) return fail(errno, "list " + dir.path().string());
  DIR* d = ::fdopendir(copy);
  if (!d) {
    int err = errno;
    ::close(copy);
    return fail(err, "list " + dir.path().string());
  }
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  ::closedir(d);
  return names;
}

std::shared_ptr<Fd> share(const StateDir& dir) {
  // The StateDir's own descriptor, shared by its records.
  auto copy = std::make_shared<Fd>(::fcntl(dir.fd(), F_DUPFD_CLOEXEC, 0));
  return copy;
}

}  // namespace

Result<WorkerList> list_workers(const StateDir& dir) {
  auto names = entries(dir);
  if (!names) return std::unexpected(names.error());
  WorkerList out;
  auto shared = share(dir);
  for (const auto& id : *names) {
    if (id.starts_with('.')) continue;  // hidden: starting, exiting, or .names
    auto wdir = sd::open_worker_dir(dir.fd(), id);
    if (!wdir) continue;  // not a directory of ours
    bool alive = sd::lock_held(wdir->get());
    auto w = sd::read_status(wdir->get(), dir.worker_path(id));
    if (!w) {
      if (w.error() != std::errc::no_such_file_or_directory) out.skipped.push_back(w.error());
      if (alive) continue;
      WorkerInfo stale;  // listed, so that --prune can remove it
      stale.id = id;
      w = std::move(stale);
    }
    w->dir = dir.worker_path(id);
    if (w->id != id) {
      out.skipped.push_back(Error(
          errc::bad_record, fmt::format("{}: its record names id '{}'", w->dir.string(), w->id)));
      if (alive) continue;
      w->id = id;
    }
    w->supervisor_alive = alive;
    w->state_dir = shared;
    if (!alive) {
      w->state = WorkerState::dead_supervisor;
      w->started_ms = 0;  // no uptime to show
    }
    out.workers.push_back(std::move(*w));
  }
  std::sort(out.workers.begin(), out.workers.end(), [](const WorkerInfo& a, const WorkerInfo& b) {
    return std::tie(a.name, a.id) < std::tie(b.name, b.id);
  });
  return out;
}

Result<WorkerInfo> find_worker(const StateDir& dir, std::string_view key) {
  // By id: one directory, not a scan of them all.
  if (!key.empty() && !key.starts_with('.') && key.find('/') == std::string_view::npos) {
    if (auto wdir = sd::open_worker_dir(dir.fd(), key); wdir) {
      if (auto w = sd::read_status(wdir->get(), dir.worker_path(key)); w && w->id == key) {
        w->supervisor_alive = sd::lock_held(wdir->get());
        if (!w->supervisor_alive) w->state = WorkerState::dead_supervisor;
        w->state_dir = share(dir);
        return w;
      }
    }
  }
  auto all = list_workers(dir);
  if (!all) return std::unexpected(all.error());
  std::vector<const WorkerInfo*> named;
  const WorkerInfo* found = nullptr;
  for (const auto& w : all->workers) {
    if (w.id == key || (w.pid > 0 && w.supervisor_alive && std::to_string(w.pid) == key) ||
        (w.supervisor_pid > 0 && std::to_string(w.supervisor_pid) == key)) {
      if (!found || (w.supervisor_alive && !found->supervisor_alive)) found = &w;
    } else if (w.name == key) {
      named.push_back(&w);
    }
  }
  if (found) return *found;
  // By name: a live worker wins over dead ones; two live ones are ambiguous.
  std::vector<const WorkerInfo*> live;
  for (auto* w : named) {
    if (w->supervisor_alive) live.push_back(w);
  }
  if (live.size() > 1) {
    std::string ids;
    for (auto* w : live) ids += (ids.empty() ? "" : ", ") + w->id;
    return fail(errc::ambiguous_name,
                fmt::format("{} live workers are named '{}' (ids {}): name one by its id",
                            live.size(), key, ids));
  }
  if (live.size() == 1) return *live.front();
  if (!named.empty()) return *named.front();
  bool digits = !key.empty() &&
                std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
  return fail(errc::no_such_worker, digits ? fmt::format("no worker with pid {}", key)
                                           : fmt::format("no worker with id or name '{}'", key));
}

// ---------------------------------------------------------------- commands

namespace {

// The worker's directory, reopened through the state directory it was
// listed from (never by its path).
Result<Fd> worker_dir(const WorkerInfo& w) {
  if (!w.state_dir || !*w.state_dir) {
    return fail(EBADF, "worker " + w.display_name() + ": no state directory (not from a listing)");
  }
  auto dir = sd::open_worker_dir(w.state_dir->get(), w.id);
  // Listed a moment ago, gone now: another client exited it meanwhile (two
  // `tether exit` at once). That is "no such worker", not a failure.
  if (!dir && dir.error() == std::errc::no_such_file_or_directory)
    return fail(errc::no_such_worker, "worker " + w.display_name() + ": gone since it was listed");
  return dir;
}

// A path that reaches a file inside the held directory without resolving
// the directory's own path again.
std::string via(const Fd& dirfd, std::string_view name) {
  return fmt::format("/proc/self/fd/{}/{}", dirfd.get(), name);
}

}  // namespace

Result<Fd> open_worker_directory(const WorkerInfo& worker) {
  return worker_dir(worker);
}

Result<Fd> open_worker_file(const WorkerInfo& worker, std::string_view name) {
  auto dir = worker_dir(worker);
  if (!dir) return std::unexpected(dir.error());
  std::string n(name);
  fs::path shown = worker.dir / n;
  Fd fd(::openat(dir->get(), n.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return fail(errno, "open " + shown.string());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail(errno, "open " + shown.string());
  if (!S_ISREG(st.st_mode)) return fail(EINVAL, shown.string() + ": not a regular file (refused)");
  if (auto r = fd.set_nonblocking(false); !r) return std::unexpected(r.error());
  return fd;
}

Result<SupervisorSpec> read_worker_spec(const WorkerInfo& worker) {
  auto dir = worker_dir(worker);
  if (!dir) return std::unexpected(dir.error());
  auto text =
      sd::read_small_file(dir->get(), sd::kSpecFile, sd::kMaxSpec, worker.dir / sd::kSpecFile);
  if (!text) return std::unexpected(text.error());
  auto spec = launch::decode_spec(*text);
  if (!spec) {
    return fail(errc::bad_record, fmt::format("{}: {}", (worker.dir / sd::kSpecFile).string(),
                                              spec.error().message()));
  }
  return spec;
}

namespace {

Error not_running(const WorkerInfo& w) {
  return Error(errc::not_running, "worker " + w.display_name() + " is not running");
}

}  // namespace

Result<void> send_command(const WorkerInfo& worker, std::string_view line, Deadline deadline) {
  std::string who = "worker " + worker.display_name();
  if (line.size() + 1 > sd::kMaxCommand || line.find('\n') != std::string_view::npos) {
    return fail(EINVAL, fmt::format("send a command to {}: a command is one line of less than "
                                    "{} bytes",
                                    who, sd::kMaxCommand));
  }
  if (!worker.supervisor_alive) return std::unexpected(not_running(worker));
  auto dir = worker_dir(worker);
  if (!dir) return std::unexpected(dir.error());
  // The Fifo type checks what it opens (a FIFO of ours, no symbolic link).
  // Non-blocking: with no reader (no supervisor) it fails with ENXIO at once
  // instead of waiting (fifo(7)).
  auto fifo = Fifo::attach(via(*dir, sd::kControlFifo));
  if (!fifo) {
    if (fifo.error() == std::errc::file_exists ||
        fifo.error() == std::errc::too_many_symbolic_link_levels) {
      return fail(errc::not_a_fifo, fmt::format("{}: {} is not a FIFO of ours (refused)", who,
                                                (worker.dir / sd::kControlFifo).string()));
    }
    // A supervisor that is exiting removes its FIFO before its directory.
    if (fifo.error() == std::errc::no_such_file_or_directory)
      return std::unexpected(not_running(worker));
    return std::unexpected(fifo.error());
  }
  auto writer = fifo->open_writer(Deadline::immediate(), true);
  if (!writer) {
    // No reader, or (an exiting supervisor) no FIFO any more.
    if (writer.error() == std::errc::no_such_device_or_address ||
        writer.error() == std::errc::no_such_file_or_directory) {
      return std::unexpected(not_running(worker));
    }
    return std::unexpected(writer.error());
  }
  std::string text(line);
  text += '\n';
  // Shorter than PIPE_BUF: written whole, never mixed with another client's.
  // A full FIFO (a flood) is waited for.
  auto r = writer->write_all(text, deadline);
  if (!r && r.error() == std::errc::broken_pipe) return std::unexpected(not_running(worker));
  if (!r) return fail(r.error(), "send a command to " + who);
  return {};
}

Result<void> exit_worker(const WorkerInfo& worker, Deadline deadline, bool wait) {
  // A supervisor renames its directory away (atomically) only once its
  // worker is gone, so a missing directory means "stopped".
  auto gone = [&] {
    auto d = worker_dir(worker);
    return !d && d.error() == errc::no_such_worker;
  };
  // The pidfd first, then the lock: if the lock is held after the pidfd
  // exists, the pidfd is the live supervisor's (not a recycled pid's).
  auto pidfd = Pidfd::open(worker.supervisor_pid);
  if (!pidfd) {
    if (pidfd.error() != std::errc::no_such_process &&
        pidfd.error() != std::errc::invalid_argument) {
      return std::unexpected(pidfd.error());
    }
    return gone() ? Result<void>() : std::unexpected(not_running(worker));
  }
  auto dir = worker_dir(worker);
  if (!dir || !sd::lock_held(dir->get())) {
    return gone() ? Result<void>() : std::unexpected(not_running(worker));
  }
  WorkerInfo live = worker;
  live.supervisor_alive = true;
  if (auto sent = send_command(live, "exit", deadline); !sent) {
    if (sent.error() != errc::not_running) return sent;
    if (gone()) return {};  // another client's exit got there first
  }
  if (!wait) return {};
  return pidfd->wait_ended(
      deadline, fmt::format("the supervisor of worker {} to end", worker.display_name()));
}

Result<WorkerInfo> wait_worker_state(const WorkerInfo& worker, WorkerState state, Deadline deadline,
                                     pid_t not_pid, std::optional<std::uint64_t> past_commands) {
  std::string who = "worker " + worker.display_name();
  auto dir = worker_dir(worker);
  if (!dir) return std::unexpected(dir.error());
  Fd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!in) return fail(errno, "inotify_init1");
  // status.json is replaced by an exchange of names: IN_MOVED_TO.
  if (::inotify_add_watch(in.get(), fmt::format("/proc/self/fd/{}", dir->get()).c_str(),
                          IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
    return fail(errno, "watch " + worker.dir.string());
  }
  Pidfd pidfd;
  if (auto p = Pidfd::open(worker.supervisor_pid); p) pidfd = std::move(*p);
  for (;;) {
    auto w = sd::read_status(dir->get(), worker.dir);
    if (w && w->state == state && (not_pid == 0 || w->pid != not_pid) &&
        (!past_commands || w->commands > *past_commands)) {
      w->supervisor_alive = true;
      w->state_dir = worker.state_dir;
      return w;
    }
    if (!sd::lock_held(dir->get())) {
      return fail(errc::supervisor_gone, fmt::format("{}: the supervisor ended before the worker "
                                                     "was {}",
                                                     who, to_string(state)));
    }
    pollfd fds[2] = {{in.get(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
    auto n = poll_fds(std::span(fds, pidfd.valid() ? 2 : 1), deadline);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) {
      return fail(ETIMEDOUT, fmt::format("wait for {} to be {} (it is {})", who, to_string(state),
                                         w ? to_string(w->state) : "unknown"));
    }
    char buf[4096];
    while (::read(in.get(), buf, sizeof buf) > 0) {
    }
  }
}

// ---------------------------------------------------------------- pruning

namespace {

// True if /proc/<pid>/environ holds TETHER_WORKER_ID=<id> (our own
// processes only: another user's environ is not readable).
bool has_worker_id(pid_t pid, std::string_view id) {
  Fd fd(::open(fmt::format("/proc/{}/environ", pid).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  std::string env;
  char buf[4096];
  ssize_t n;
  while ((n = retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); })) > 0) {
    env.append(buf, static_cast<std::size_t>(n));
    if (env.size() > (1 << 20)) break;
  }
  std::string want = fmt::format("TETHER_WORKER_ID={}", id);
  for (std::size_t at = 0; at < env.size();) {
    std::size_t end = env.find('\0', at);
    if (end == std::string::npos) end = env.size();
    if (std::string_view(env).substr(at, end - at) == want) return true;
    at = end + 1;
  }
  return false;
}

// Kills what is left of a dead supervisor's worker: processes in the
// worker's session or process group (it led both), started no earlier than
// it, that carry its TETHER_WORKER_ID. Each is held by a pidfd before it is
// checked, so the process checked is the one signalled. A pid that was
// recycled fails these checks and is left alone; pid 1 and below never
// qualify. Returns how many were killed.
int kill_remnants(const WorkerInfo& w) {
  if (w.pid <= 1) return 0;
  DIR* d = ::opendir("/proc");
  if (!d) return 0;
  int killed = 0;
  while (const dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 1 || pid == ::getpid()) continue;
    auto before = sd::read_proc_stat(static_cast<pid_t>(pid));
    if (!before || (before->pgrp != w.pid && before->session != w.pid)) continue;
    auto pidfd = Pidfd::open(static_cast<pid_t>(pid));
    if (!pidfd) continue;
    auto st = sd::read_proc_stat(static_cast<pid_t>(pid));  // the process the pidfd holds
    if (!st || (st->pgrp != w.pid && st->session != w.pid)) continue;
    bool is_leader = pid == w.pid;
    if (w.pid_start == 0) continue;  // no identity recorded: signal nothing
    if (is_leader ? st->start_ticks != w.pid_start : st->start_ticks < w.pid_start) continue;
    if (!has_worker_id(static_cast<pid_t>(pid), w.id)) continue;
    if (pidfd->send_signal(SIGKILL)) ++killed;
  }
  ::closedir(d);
  return killed;
}

}  // namespace

Result<void> sd::remove_tree(int parent_fd, const std::string& name) {
  Fd fd(::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOTDIR || errno == ELOOP) {
      if (::unlinkat(parent_fd, name.c_str(), 0) != 0) return fail(errno, "remove " + name);
      return {};
    }
    if (errno == ENOENT) return {};
    return fail(errno, "remove " + name);
  }
  int copy = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0);
  DIR* d = copy >= 0 ? ::fdopendir(copy) : nullptr;
  if (!d) {
    if (copy >= 0) ::close(copy);
    return fail(errno, "remove " + name);
  }
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  ::closedir(d);
  for (const auto& n : names) {
    if (::unlinkat(fd.get(), n.c_str(), 0) == 0) continue;
    if (errno == EISDIR || errno == EPERM) {
      if (auto r = remove_tree(fd.get(), n); !r) return fail(r.error(), name);
      continue;
    }
    if (errno != ENOENT) return fail(errno, fmt::format("remove {}/{}", name, n));
  }
  if (::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    return fail(errno, "remove " + name);
  }
  return {};
}

Result<void> prune_worker(const WorkerInfo& worker) {
  std::string who = "worker " + worker.display_name();
  auto dir = worker_dir(worker);
  if (!dir) return std::unexpected(dir.error());
  if (sd::lock_held(dir->get())) {
    return fail(EBUSY, who + " is running; `tether exit " + worker.id + "` stops it");
  }
  (void)kill_remnants(worker);
  dir->reset();
  int state_fd = worker.state_dir->get();
  // Renamed away first: a client sees it whole or not at all.
  std::string gone = "." + worker.id + ".gone";
  if (::renameat(state_fd, worker.id.c_str(), state_fd, gone.c_str()) != 0) {
    return fail(errno, "remove " + worker.dir.string());
  }
  if (!worker.name.empty()) sd::release_name(state_fd, worker.name, worker.id);
  return sd::remove_tree(state_fd, gone);
}

Result<int> prune_leftovers(const StateDir& dir) {
  auto names = entries(dir);
  if (!names) return std::unexpected(names.error());
  int removed = 0;
  for (const auto& n : *names) {
    bool hidden_worker =
        n.starts_with('.') && (n.ends_with(".new") || n.ends_with(".gone")) && n.size() > 5;
    if (!hidden_worker) continue;
    auto wdir = sd::open_worker_dir(dir.fd(), n);
    if (!wdir || sd::lock_held(wdir->get())) continue;  // a supervisor is still at work
    wdir->reset();
    if (sd::remove_tree(dir.fd(), n)) ++removed;
  }
  // Name claims whose holder is gone.
  if (auto names_dir = sd::open_worker_dir(dir.fd(), sd::kNamesDir); names_dir) {
    DIR* d = ::fdopendir(::fcntl(names_dir->get(), F_DUPFD_CLOEXEC, 0));
    std::vector<std::pair<std::string, std::string>> claims;
    while (d) {
      const dirent* e = ::readdir(d);
      if (!e) break;
      char target[256];
      ssize_t len = ::readlinkat(names_dir->get(), e->d_name, target, sizeof target - 1);
      if (len > 0)
        claims.emplace_back(e->d_name, std::string(target, static_cast<std::size_t>(len)));
    }
    if (d) ::closedir(d);
    for (const auto& [name, id] : claims) {
      auto holder = sd::open_worker_dir(dir.fd(), id);
      auto starting = sd::open_worker_dir(dir.fd(), "." + id + ".new");
      bool alive =
          (holder && sd::lock_held(holder->get())) || (starting && sd::lock_held(starting->get()));
      if (!alive) {
        sd::release_name(dir.fd(), name, id);
        ++removed;
      }
    }
  }
  return removed;
}

}  // namespace tether
