// Command and spawn.
//
// The child is created with clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD): it
// shares our memory and we are suspended until it execs or exits, exactly as
// glibc's posix_spawn does, so spawning costs no page-table copy however large
// the parent is. CLONE_PIDFD hands us the pidfd atomically: there is no
// moment where the child exists without a handle that pins it.
//
// Because memory is shared and the parent is suspended until exec, the
// child reports a setup or exec failure by writing errno into the plan it
// was given; when the parent resumes the value is final (a close-on-exec
// pipe would tell the same thing with three more syscalls). Everything the
// child needs — argv, envp, PATH candidates, descriptors — is prepared here
// in the parent, so the child only makes async-signal-safe system calls.
#include <fcntl.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "internal.hpp"

extern char** environ;

namespace tether {

Stdio Stdio::file(std::filesystem::path path, bool append, mode_t mode) {
  Stdio s(Kind::path);
  s.path_ = std::move(path);
  s.append_ = append;
  s.mode_ = mode;
  return s;
}

Command::Command(std::string program) : program_(std::move(program)) {
  argv_.push_back(program_);
}

Command& Command::arg(std::string a) {
  argv_.push_back(std::move(a));
  return *this;
}
Command& Command::arg0(std::string name) {
  argv_[0] = std::move(name);
  return *this;
}
Command& Command::env(std::string_view name, std::string_view value) {
  env_edits_.emplace_back(std::string(name), std::string(value));
  return *this;
}
Command& Command::env_remove(std::string_view name) {
  env_edits_.emplace_back(std::string(name), std::nullopt);
  return *this;
}
Command& Command::env_clear() {
  env_clear_ = true;
  env_edits_.clear();
  return *this;
}
Command& Command::cwd(std::filesystem::path dir) {
  cwd_ = std::move(dir);
  return *this;
}
Command& Command::stdin_from(Stdio s) {
  stdin_ = std::move(s);
  return *this;
}
Command& Command::stdout_to(Stdio s) {
  stdout_ = std::move(s);
  return *this;
}
Command& Command::stderr_to(Stdio s) {
  stderr_ = std::move(s);
  return *this;
}
Command& Command::pass_fd(int source, int target) {
  passed_fds_.emplace_back(source, target);
  return *this;
}
Command& Command::pty(PtyOptions options) {
  pty_ = options;
  stdin_ = stdout_ = stderr_ = Stdio::pty();
  return *this;
}
Command& Command::new_process_group(bool on) {
  if (on) {
    pgid_ = 0;
  } else {
    pgid_.reset();
  }
  return *this;
}
Command& Command::process_group(pid_t pgid) {
  pgid_ = pgid;
  return *this;
}
Command& Command::new_session(bool on) {
  new_session_ = on;
  return *this;
}
Command& Command::die_with_parent(int sig) {
  death_signal_ = sig;
  return *this;
}
Command& Command::on_drop(OnDrop policy, std::chrono::milliseconds grace) {
  on_drop_ = policy;
  drop_grace_ = grace;
  return *this;
}

std::string Command::describe() const {
  std::string text = program_;
  for (std::size_t i = 1; i < argv_.size(); ++i) {
    text += ' ';
    text += argv_[i];
  }
  return text;
}

namespace {

// Everything the child does, decided in the parent. The child writes only
// `failed_errno` and `failed_step`.
struct ChildPlan {
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* const* candidates = nullptr;  // paths to try execve() on, in order
  std::size_t candidate_count = 0;
  char** sh_argv = nullptr;  // {"/bin/sh", <slot>, argv[1..], nullptr} for ENOEXEC
  const char* cwd = nullptr;
  const int* fd_sources = nullptr;  // descriptor i of the parent becomes fd_targets[i]
  const int* fd_targets = nullptr;
  int* fd_scratch = nullptr;
  std::size_t fd_count = 0;
  int fd_floor = 3;           // scratch copies go at or above this, past every target
  const int* keep = nullptr;  // sorted targets >= 3 that survive close_range
  std::size_t keep_count = 0;
  bool merge_stderr = false;
  bool new_session = false;
  int controlling_tty = -1;  // the pty slave, made the new session's terminal
  bool set_pgid = false;
  pid_t pgid = 0;
  int death_signal = 0;
  pid_t parent_pid = 0;

  int failed_errno = 0;
  const char* failed_step = nullptr;
};

// The child side. Async-signal-safe calls only: the memory belongs to the
// suspended parent. Not instrumented by sanitizers, whose bookkeeping would
// run on a stack the parent later reuses.
#define TETHER_CHILD_CODE __attribute__((no_sanitize("address", "undefined")))

[[noreturn]] TETHER_CHILD_CODE void child_fail(ChildPlan* plan, const char* step) {
  plan->failed_errno = errno;
  plan->failed_step = step;
  ::_exit(127);
}

TETHER_CHILD_CODE int child_main(void* arg) {
  auto* plan = static_cast<ChildPlan*>(arg);

  // Handlers of the parent would run on our shared memory: back to default.
  // SIGPIPE and SIGXFSZ also leave SIG_IGN, which exec would otherwise keep.
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    struct sigaction sa;
    if (::sigaction(sig, nullptr, &sa) != 0) continue;  // glibc-internal signals
    bool caught = sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN;
    if (caught || sig == SIGPIPE || sig == SIGXFSZ) {
      std::memset(&sa, 0, sizeof sa);
      sa.sa_handler = SIG_DFL;
      ::sigaction(sig, &sa, nullptr);
    }
  }

  if (plan->new_session && ::setsid() < 0) child_fail(plan, "setsid");
  // Only a session leader without a terminal may acquire one, hence right
  // after setsid(). Argument 0: never steal a terminal that is already
  // another session's (ioctl_tty(2), TIOCSCTTY); ours is brand new.
  if (plan->controlling_tty >= 0 && ::ioctl(plan->controlling_tty, TIOCSCTTY, 0) != 0)
    child_fail(plan, "make the pty its controlling terminal (TIOCSCTTY)");
  if (plan->set_pgid && ::setpgid(0, plan->pgid) != 0) child_fail(plan, "setpgid");
  if (plan->death_signal != 0) {
    if (::prctl(PR_SET_PDEATHSIG, plan->death_signal, 0, 0, 0) != 0)
      child_fail(plan, "prctl(PDEATHSIG)");
    if (::getppid() != plan->parent_pid) ::_exit(127);  // the parent is already gone
  }
  if (plan->cwd != nullptr && ::chdir(plan->cwd) != 0) child_fail(plan, "chdir");

  // Move every source out of the way first (above every target), then dup2
  // into place: a source that is itself a target (say stderr given fd 1)
  // cannot be clobbered. dup2 clears close-on-exec on the target; the
  // scratch copies keep it and vanish at exec.
  for (std::size_t i = 0; i < plan->fd_count; ++i) {
    plan->fd_scratch[i] = ::fcntl(plan->fd_sources[i], F_DUPFD_CLOEXEC, plan->fd_floor);
    if (plan->fd_scratch[i] < 0) child_fail(plan, "set up descriptors");
  }
  for (std::size_t i = 0; i < plan->fd_count; ++i) {
    if (::dup2(plan->fd_scratch[i], plan->fd_targets[i]) < 0)
      child_fail(plan, "set up descriptors");
  }
  if (plan->merge_stderr && ::dup2(1, 2) < 0) child_fail(plan, "merge stderr into stdout");

  // Close every other descriptor (our fd table is our own: no CLONE_FILES).
  unsigned low = 3;
  for (std::size_t i = 0; i < plan->keep_count; ++i) {
    auto keep = static_cast<unsigned>(plan->keep[i]);
    if (keep > low) ::close_range(low, keep - 1, 0);
    low = keep + 1;
  }
  if (::close_range(low, ~0U, 0) != 0) child_fail(plan, "close descriptors");

  sigset_t empty;
  sigemptyset(&empty);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);

  // execvp(3)'s rules: go on past ENOENT-like errors, remember EACCES, run a
  // file without #! through /bin/sh.
  int result = ENOENT;
  bool saw_eacces = false;
  for (std::size_t i = 0; i < plan->candidate_count; ++i) {
    ::execve(plan->candidates[i], plan->argv, plan->envp);
    int err = errno;
    if (err == ENOEXEC) {
      plan->sh_argv[1] = const_cast<char*>(plan->candidates[i]);
      ::execve("/bin/sh", plan->sh_argv, plan->envp);
      err = errno;
    }
    if (err == EACCES) {
      saw_eacces = true;
    } else if (err != ENOENT && err != ENOTDIR && err != ESTALE && err != ENODEV &&
               err != ETIMEDOUT) {
      result = err;
      saw_eacces = false;
      break;
    }
    result = err;
  }
  errno = saw_eacces ? EACCES : result;
  child_fail(plan, "exec");
  return 127;
}

// One child stack per thread, reused: no mmap, munmap or page faults per spawn.
struct ChildStack {
  static constexpr std::size_t size = std::size_t{256} * 1024;
  void* base = MAP_FAILED;
  ~ChildStack() {
    if (base != MAP_FAILED) ::munmap(base, size);
  }
  void* top() {
    if (base == MAP_FAILED) {
      base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                    -1, 0);
      if (base == MAP_FAILED) return nullptr;
    }
    return static_cast<char*>(base) + size;
  }
};
thread_local ChildStack child_stack;

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

Result<Process> Command::spawn() const {
  const std::string what = fmt::format("spawn {}", program_);
  if (program_.empty()) return fail(ENOENT, "spawn: empty program name");

  // Environment.
  std::vector<std::string> env;
  if (!env_clear_) {
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
  }
  for (const auto& [name, value] : env_edits_) {
    std::string prefix = name + '=';
    std::erase_if(env, [&](const std::string& e) { return e.starts_with(prefix); });
    if (value) env.push_back(prefix + *value);
  }
  std::vector<std::string> argv_copy = argv_;
  auto argv = c_strings(argv_copy);
  auto envp = c_strings(env);

  // Where to look for the program: the child's $PATH if the command sets
  // one, else ours, else the default of confstr(_CS_PATH).
  std::vector<std::string> candidates;
  if (program_.find('/') != std::string::npos) {
    candidates.push_back(program_);
  } else {
    std::string path = "/bin:/usr/bin";
    const std::string* chosen = nullptr;
    for (const auto& e : env) {
      if (e.starts_with("PATH=")) chosen = &e;
    }
    if (chosen != nullptr) {
      path = chosen->substr(5);
    } else if (const char* ours = std::getenv("PATH"); ours != nullptr && env_clear_ == false) {
      path = ours;
    }
    std::size_t start = 0;
    for (;;) {
      std::size_t end = path.find(':', start);
      std::string dir = path.substr(start, end - start);
      candidates.push_back((dir.empty() ? std::string(".") : dir) + '/' + program_);
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  std::vector<const char*> candidate_ptrs;
  candidate_ptrs.reserve(candidates.size());
  for (const auto& c : candidates) candidate_ptrs.push_back(c.c_str());
  std::vector<char*> sh_argv{const_cast<char*>("/bin/sh"), nullptr};
  sh_argv.insert(sh_argv.end(), argv.begin() + 1, argv.end());

  // A terminal: opened and set up here; the child only takes it over.
  // Any stream on Stdio::pty() asks for one, with default options unless
  // pty() gave others.
  auto on_pty = [](const Stdio& s) { return s.kind() == Stdio::Kind::pty; };
  std::optional<PtyOptions> pty_options = pty_;
  if (!pty_options && (on_pty(stdin_) || on_pty(stdout_) || on_pty(stderr_))) {
    pty_options = PtyOptions{};
  }
  if (pty_options && pgid_ && *pgid_ != 0) {
    return fail(EINVAL, fmt::format("{}: a child on a pty leads a new session (setsid), so it "
                                    "cannot join process group {}",
                                    what, *pgid_));
  }

  // Descriptors. Parent ends of pipes go into the Process; child ends and
  // opened files are closed here when spawn returns.
  Process proc;
  Fd pty_slave;
  if (pty_options) {
    auto pair = Pty::open(*pty_options);
    if (!pair) return fail(pair.error(), what);
    proc.pty_ = std::move(pair->master);
    pty_slave = std::move(pair->slave);
  }
  std::vector<Fd> child_ends;
  std::vector<int> sources, targets;
  bool merge_stderr = false;
  Fd dev_null;
  auto plan_stream = [&](const Stdio& s, int target, Fd& parent_end) -> Result<void> {
    switch (s.kind()) {
      case Stdio::Kind::inherit:
        return {};
      case Stdio::Kind::merge_into_stdout:
        if (target != 2) return fail(EINVAL, what + ": merge_into_stdout is only for stderr");
        merge_stderr = true;
        return {};
      case Stdio::Kind::null:
        if (!dev_null.valid()) {
          dev_null.reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
          if (!dev_null.valid()) return fail(errno, what + ": open /dev/null");
        }
        sources.push_back(dev_null.get());
        break;
      case Stdio::Kind::pipe: {
        auto p = make_pipe();
        if (!p) return fail(p.error(), what);
        Fd& child = target == 0 ? p->first : p->second;
        parent_end = std::move(target == 0 ? p->second : p->first);
        sources.push_back(child.get());
        child_ends.push_back(std::move(child));
        break;
      }
      case Stdio::Kind::path: {
        int flags =
            O_CLOEXEC | O_NOCTTY |
            (target == 0 ? O_RDONLY : (O_WRONLY | O_CREAT | (s.append() ? O_APPEND : O_TRUNC)));
        Fd file(::open(s.path().c_str(), flags, s.mode()));
        if (!file.valid()) {
          return fail(errno, fmt::format("{}: open {} for {}", what, s.path().string(),
                                         target == 0   ? "stdin"
                                         : target == 1 ? "stdout"
                                                       : "stderr"));
        }
        sources.push_back(file.get());
        child_ends.push_back(std::move(file));
        break;
      }
      case Stdio::Kind::fd:
        sources.push_back(s.borrowed_fd());
        break;
      case Stdio::Kind::pty:
        sources.push_back(pty_slave.get());
        break;
    }
    targets.push_back(target);
    return {};
  };
  if (auto r = plan_stream(stdin_, 0, proc.stdin_); !r) return std::unexpected(r.error());
  if (auto r = plan_stream(stdout_, 1, proc.stdout_); !r) return std::unexpected(r.error());
  if (auto r = plan_stream(stderr_, 2, proc.stderr_); !r) return std::unexpected(r.error());
  std::vector<int> keep;
  for (auto [source, target] : passed_fds_) {
    if (target < 0 || source < 0) return fail(EBADF, what + ": pass_fd with a negative descriptor");
    sources.push_back(source);
    targets.push_back(target);
    if (target >= 3) keep.push_back(target);
  }
  std::sort(keep.begin(), keep.end());
  keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
  std::vector<int> scratch(sources.size());

  ChildPlan plan;
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.candidates = candidate_ptrs.data();
  plan.candidate_count = candidate_ptrs.size();
  plan.sh_argv = sh_argv.data();
  std::string cwd = cwd_ ? cwd_->string() : std::string();
  plan.cwd = cwd_ ? cwd.c_str() : nullptr;
  plan.fd_sources = sources.data();
  plan.fd_targets = targets.data();
  plan.fd_scratch = scratch.data();
  plan.fd_count = sources.size();
  plan.fd_floor =
      std::max(3, targets.empty() ? 0 : *std::max_element(targets.begin(), targets.end()) + 1);
  plan.keep = keep.data();
  plan.keep_count = keep.size();
  plan.merge_stderr = merge_stderr;
  // A pty child leads its own session and so its own group already:
  // setpgid(0, 0) would fail with EPERM for a session leader.
  plan.new_session = new_session_ || pty_options.has_value();
  plan.controlling_tty = pty_slave.get();
  plan.set_pgid = pgid_.has_value() && !pty_options;
  plan.pgid = pgid_.value_or(0);
  plan.death_signal = death_signal_;
  plan.parent_pid = ::getpid();

  void* stack = child_stack.top();
  if (stack == nullptr) return fail(errno, what + ": allocate the child's stack");

  // No signal handler may run in the child on our memory before it resets
  // them: block everything across clone, restore after.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int pidfd = -1;
  pid_t pid =
      ::clone(child_main, stack, CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &plan, &pidfd);
  int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return fail(clone_errno, what + ": clone");

  Process child = Process::adopt(Fd(pidfd), pid, program_);
  if (plan.failed_errno != 0) {
    // It has already _exit()ed: reap it now, leave no zombie behind.
    (void)child.wait();
    std::string step = plan.failed_step;
    if (step == "exec") return fail(plan.failed_errno, what);
    if (step == "chdir") return fail(plan.failed_errno, fmt::format("{}: chdir {}", what, cwd));
    return fail(plan.failed_errno, fmt::format("{}: {}", what, step));
  }
  child.stdin_ = std::move(proc.stdin_);
  child.stdout_ = std::move(proc.stdout_);
  child.stderr_ = std::move(proc.stderr_);
  child.pty_ = std::move(proc.pty_);
  if (new_session_ || pty_options) {
    child.pgid_ = pid;
  } else if (pgid_) {
    child.pgid_ = *pgid_ == 0 ? pid : *pgid_;
  }
  child.name_ = describe();
  child.set_on_drop(on_drop_, drop_grace_);
  return child;
}

Result<ExitStatus> Command::status(Deadline deadline) const {
  auto p = spawn();
  if (!p) return std::unexpected(p.error());
  auto st = p->wait(deadline);
  if (!st) return std::unexpected(st.error());  // the child is killed by its drop policy
  return st;
}

Result<Output> Command::output(std::string_view input, Deadline deadline) const {
  Command c = *this;
  if (c.stdin_.kind() == Stdio::Kind::inherit) c.stdin_ = Stdio::pipe();
  if (c.stdout_.kind() == Stdio::Kind::inherit) c.stdout_ = Stdio::pipe();
  if (c.stderr_.kind() == Stdio::Kind::inherit) c.stderr_ = Stdio::pipe();
  auto p = c.spawn();
  if (!p) return std::unexpected(p.error());
  auto out = p->communicate(input, deadline);
  if (!out) {
    (void)p->kill();
    return std::unexpected(out.error());
  }
  return out;
}

}  // namespace tether
