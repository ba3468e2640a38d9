// fork(2) with a pidfd.
//
// fork() gives a pid, not a pidfd; pidfd_open(pid) afterwards is only safe
// while the child cannot have been reaped (pidfd_open(2), NOTES). So the child
// first waits on a gate pipe for one byte that the parent writes only once it
// holds the pidfd: until then the child cannot exit, cannot be reaped, and
// its pid cannot be recycled.
//
// The gate is a byte, not end-of-file: when two threads fork at once, each
// child inherits the other's gate write end, and waiting for EOF would
// deadlock the two children on each other.
#include <cstdio>
#include <exception>

#include <fmt/format.h>

#include "internal.hpp"

namespace tether {

namespace {

Result<void> check_fork_allowed(const ForkOptions& options) {
  if (options.allow_threads) return {};
  auto threads = thread_count();
  if (!threads) return std::unexpected(threads.error());
  if (*threads > 1) {
    return fail(errc::unsafe_fork,
                fmt::format("fork: {} threads are running; the child would inherit locks held by "
                            "threads that do not exist there (set ForkOptions::allow_threads if "
                            "the child only execs or calls async-signal-safe functions)",
                            *threads));
  }
  return {};
}

}  // namespace

Result<Forked> fork_here(ForkOptions options) {
  if (auto ok = check_fork_allowed(options); !ok) return std::unexpected(ok.error());
  auto gate = make_pipe();
  if (!gate) return fail(gate.error(), "fork");
  std::fflush(nullptr);  // or buffered output would be written twice
  pid_t pid = ::fork();
  if (pid < 0) return fail(errno, "fork");
  if (pid == 0) {
    gate->second.reset();
    char byte = 0;
    ssize_t n = retry_eintr([&] { return ::read(gate->first.get(), &byte, 1); });
    // End of file without the byte: the parent died before it let us go.
    if (n != 1) ::_exit(127);
    gate->first.reset();
    return Forked{};
  }
  auto opened = Pidfd::open(pid);
  int err = opened ? 0 : opened.error().code().value();
  Fd pidfd = opened ? opened->release() : Fd();
  if (pidfd.valid()) {
    const char go = 'g';
    (void)retry_eintr([&] { return ::write(gate->second.get(), &go, 1); });
  }
  gate->second.reset();
  if (!pidfd.valid()) {
    // Cannot happen for a live child of ours; if it does, do not leave it.
    ::kill(pid, SIGKILL);
    siginfo_t info{};
    rusage ru{};
    (void)retry_eintr([&] { return detail::waitid_rusage(P_PID, pid, &info, WEXITED, &ru); });
    return fail(err, fmt::format("fork: pidfd_open({})", pid));
  }
  Process p = Process::adopt(std::move(pidfd), pid, fmt::format("fork of {}", ::getpid()));
  p.set_on_drop(options.on_drop);
  return Forked{std::move(p)};
}

Result<Process> fork(const std::function<int()>& child, ForkOptions options) {
  auto forked = fork_here(options);
  if (!forked) return std::unexpected(forked.error());
  if (!forked->in_child()) return std::move(forked->process);
  int code = 70;  // EX_SOFTWARE: the function threw
  try {
    code = child();
  } catch (...) {
  }
  std::fflush(nullptr);
  ::_exit(code);
}

}  // namespace tether
