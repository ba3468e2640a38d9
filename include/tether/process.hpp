// tether/process.hpp — spawning, waiting, signals, exit status, resource use,
// pipelines and fork.
//
//   auto out = tether::Command("ls").arg("-l").arg("/").output();
//   if (!out) { fmt::print(stderr, "{}\n", out.error().message()); return 1; }
//   fmt::print("{} ({})\n", out->out, out->status.describe());
//
// Every Process holds a pidfd. Waiting uses waitid(P_PIDFD), so it never reaps
// another part of the program's child and never touches a recycled pid; it
// reports exit code and terminating signal separately, and resource usage as
// wait4(2) does. No SIGCHLD handler is installed.
//
// What happens to a Process dropped without wait(): see OnDrop. The default
// kills the child (SIGKILL) and reaps it, so neither a zombie nor a forgotten
// running child outlives its owner.
#pragma once

#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tether/sys.hpp"

namespace tether {

// ---------------------------------------------------------------- status

// Resource usage of a finished child, as wait4(2)/getrusage(2) report it.
struct Usage {
  std::chrono::microseconds user_cpu{0};
  std::chrono::microseconds system_cpu{0};
  long max_rss_kib = 0;  // peak resident set size
  long minor_faults = 0;
  long major_faults = 0;
  long voluntary_switches = 0;    // the child blocked
  long involuntary_switches = 0;  // the child was preempted

  static Usage from_rusage(const rusage& ru) noexcept;
};

// How a process ended: an exit code or a terminating signal, never mixed. A
// child that calls exit(137) is `code() == 137`, one killed by SIGKILL is
// `signal() == SIGKILL`; tether never folds a signal into 128 + signo.
class ExitStatus {
 public:
  static ExitStatus exited(int code, pid_t pid = 0, Usage usage = {}) noexcept;
  static ExitStatus killed(int signal, bool core_dumped, pid_t pid = 0, Usage usage = {}) noexcept;
  // From a wait(2)-style status word.
  static ExitStatus from_wait_status(int status, pid_t pid = 0, Usage usage = {}) noexcept;

  bool success() const noexcept { return !signaled_ && value_ == 0; }
  std::optional<int> code() const noexcept {
    return signaled_ ? std::nullopt : std::optional<int>(value_);
  }
  std::optional<int> signal() const noexcept {
    return signaled_ ? std::optional<int>(value_) : std::nullopt;
  }
  bool core_dumped() const noexcept { return core_dumped_; }
  pid_t pid() const noexcept { return pid_; }
  const Usage& usage() const noexcept { return usage_; }

  // "exited with code 3", "killed by SIGSEGV (core dumped)".
  std::string describe() const;
  // s6's convention: the code, or 256 + signal. Unambiguous, unlike 128 + signo.
  int as_s6_code() const noexcept { return signaled_ ? 256 + value_ : value_; }

  friend bool operator==(const ExitStatus& a, const ExitStatus& b) noexcept {
    return a.signaled_ == b.signaled_ && a.value_ == b.value_ && a.core_dumped_ == b.core_dumped_;
  }

 private:
  bool signaled_ = false;
  bool core_dumped_ = false;
  int value_ = 0;
  pid_t pid_ = 0;
  Usage usage_{};
};

// ---------------------------------------------------------------- stdio

// Where a child's standard stream comes from or goes to.
class Stdio {
 public:
  enum class Kind { inherit, null, pipe, path, fd, merge_into_stdout, pty };

  static Stdio inherit() noexcept { return Stdio(Kind::inherit); }
  static Stdio null() noexcept { return Stdio(Kind::null); }
  // A new pipe; the parent's end is Process::stdin_fd()/stdout_fd()/stderr_fd().
  static Stdio pipe() noexcept { return Stdio(Kind::pipe); }
  // A file opened by the parent before the child starts (errors surface from
  // spawn). For output, `append` adds to it, otherwise it is truncated;
  // a new file gets `mode` (default 0600).
  static Stdio file(std::filesystem::path path, bool append = false, mode_t mode = 0600);
  // An existing descriptor, duplicated into the child. It is only borrowed:
  // it must stay open until spawn() returns.
  static Stdio fd(int fd) noexcept {
    Stdio s(Kind::fd);
    s.fd_ = fd;
    return s;
  }
  // For stderr only: the same destination as stdout (2>&1).
  static Stdio merge_into_stdout() noexcept { return Stdio(Kind::merge_into_stdout); }
  // The child's pseudo-terminal (see Command::pty, which puts all three
  // streams on it); the parent's end is Process::pty(). Choosing it for any
  // stream gives the child a terminal as Command::pty() does, with the
  // default PtyOptions unless Command::pty() set others.
  static Stdio pty() noexcept { return Stdio(Kind::pty); }

  Kind kind() const noexcept { return kind_; }
  int borrowed_fd() const noexcept { return fd_; }
  const std::filesystem::path& path() const noexcept { return path_; }
  bool append() const noexcept { return append_; }
  mode_t mode() const noexcept { return mode_; }

 private:
  explicit Stdio(Kind k) noexcept : kind_(k) {}
  Kind kind_;
  int fd_ = -1;
  std::filesystem::path path_;
  bool append_ = false;
  mode_t mode_ = 0600;
};

// ---------------------------------------------------------------- drop policy

// What the destructor of a Process that was never waited for does.
enum class OnDrop {
  kill,       // SIGKILL, then reap (default): nothing outlives its owner
  terminate,  // SIGTERM, wait up to the grace period, then SIGKILL; reap
  wait,       // block until the child exits by itself, then reap
  detach,     // let it run; a background reaper thread reaps it when it ends
};

// ---------------------------------------------------------------- terminal

// A terminal's size in character cells (struct winsize, without the pixel
// fields nobody fills in).
struct WindowSize {
  unsigned short rows = 0;
  unsigned short cols = 0;
  friend bool operator==(const WindowSize&, const WindowSize&) = default;
};

// How Command::pty() (or Pty::open) sets the terminal up before the child starts.
struct PtyOptions {
  // The window size the child sees (ioctl TIOCGWINSZ, `stty size`). 24 x 80
  // by default, the VT100's; 0 x 0 leaves the kernel's 0 x 0, which
  // programs that lay out text take as "no width" and handle badly.
  unsigned short rows = 24;
  unsigned short cols = 80;
  // false: what the parent writes is not echoed back to it (ECHO off).
  bool echo = true;
  // cfmakeraw(3): no echo, no line editing (each byte reaches the child at
  // once; ^C, ^D, ^Z are plain bytes), no "\n" -> "\r\n" on output. For
  // binary data, or a program that drives the terminal itself.
  bool raw = false;
};

// The parent's end (the master) of a pseudo-terminal. What the parent
// writes, the child reads as typed input; what the child writes to the
// terminal, the parent reads here. Move-only; the descriptor is
// close-on-exec and non-blocking (every call below waits with poll(2) when
// it has to, so deadlines are exact).
//
//   auto child = tether::Command("sh").args({"-c", "tty"}).pty({.rows = 24, .cols = 80}).spawn();
//   auto text = child->pty().read_all(5s);      // "/dev/pts/3\r\n"
//
// A terminal is not a pipe. With termios(3)'s defaults, which the child may
// change:
//  - it echoes input: what the parent writes comes back on read() (unless
//    PtyOptions::echo is false, or the child turns echo off, as a password
//    prompt does);
//  - input reaches the child a line at a time (canonical mode; at most
//    4095 bytes to a line, the rest is dropped), ^C sends SIGINT to the child's foreground
//    process group, ^D at the start of a line is end of file (send_eof);
//  - output "\n" arrives as "\r\n" (ONLCR);
//  - there is no half-close: the parent cannot end the child's input by
//    closing something (send_eof types ^D instead). Closing the master —
//    close(), or dropping the Process — hangs the terminal up: the child
//    gets SIGHUP, as when a terminal window is closed. So close it only
//    once the child is reaped: a child closes its terminal (end of stream
//    here) a moment before it exits, and a hang-up in that moment kills it.
// PtyOptions::raw turns all of this off; set_echo()/set_raw() change it
// later. For any other setting, tcgetattr(3)/tcsetattr(3) on fd() act on
// the child's terminal (Linux applies termios requests made on a master to
// its slave).
//
// End of stream: once no process has the terminal open any more (the child
// and every descendant that inherited it have exited), read() returns what
// is still buffered, then 0, as a pipe does; write() then fails with
// broken_pipe. Someone must read: a child that writes more than the
// terminal buffers (a few KiB) blocks until the parent reads, as with a pipe.
class Pty {
 public:
  Pty() noexcept = default;

  // A new pseudo-terminal, set up as `options` says: the master, and the
  // slave opened with O_NOCTTY (so it never becomes the controlling
  // terminal of this process) and close-on-exec. Command::pty() does this
  // for you; use it directly to hand the slave to a child of your own
  // making, which must then setsid(), ioctl(slave, TIOCSCTTY, 0) and dup2
  // it onto 0, 1 and 2 (what login_tty(3) does).
  struct Pair;
  static Result<Pair> open(PtyOptions options = {});

  bool valid() const noexcept { return fd_.valid(); }
  int fd() const noexcept { return fd_.get(); }  // for poll/epoll
  Fd& handle() noexcept { return fd_; }
  [[nodiscard]] Fd release() noexcept { return std::move(fd_); }
  Result<void> close() noexcept { return fd_.close(); }
  // The slave's path ("/dev/pts/3", from ptsname_r(3)): what tty(1) prints
  // in the child.
  const std::string& slave_name() const noexcept { return name_; }

  // Reads what is there (at least 1 byte), waiting until the deadline
  // (timed_out). Returns 0 at end of stream.
  Result<std::size_t> read(std::span<std::byte> buf, Deadline deadline = Deadline::never()) const;
  // Never blocks: fails with would-block (resource_unavailable_try_again)
  // when nothing is there yet.
  Result<std::size_t> try_read(std::span<std::byte> buf) const;
  // Fills `buf` completely; errc::end_of_stream or errc::truncated if the
  // terminal closes first.
  Result<void> read_exact(std::span<std::byte> buf, Deadline deadline = Deadline::never()) const;
  // Reads to end of stream: everything the child shows until it is gone.
  Result<std::string> read_all(Deadline deadline = Deadline::never()) const;
  // Reads, appending to `out`, until what it appended ends with `text` (a
  // prompt, a line). One byte per read(2), so nothing after `text` is taken
  // from the terminal; for bulk data use read(). On error `out` keeps what
  // was read; end of stream before `text` is errc::end_of_stream.
  Result<void> read_until(std::string& out, std::string_view text,
                          Deadline deadline = Deadline::never()) const;

  // Writes some bytes, waiting until at least one fits. Fails with
  // broken_pipe once nobody has the terminal open (Linux would accept and
  // discard the bytes).
  Result<std::size_t> write(std::span<const std::byte> data,
                            Deadline deadline = Deadline::never()) const;
  Result<std::size_t> try_write(std::span<const std::byte> data) const;
  Result<void> write_all(std::span<const std::byte> data,
                         Deadline deadline = Deadline::never()) const;
  Result<void> write_all(std::string_view text, Deadline deadline = Deadline::never()) const {
    return write_all(std::as_bytes(std::span(text)), deadline);
  }
  // Types the end-of-file character (VEOF, normally ^D). At the start of a
  // line the child's read returns 0, its end of file; after part of a line
  // it hands that part over without a newline (so send it twice). Fails
  // with EINVAL in raw mode, which has no such character.
  Result<void> send_eof(Deadline deadline = Deadline::never()) const;

  Result<WindowSize> window_size() const;
  // TIOCSWINSZ. When the size changes, the kernel sends SIGWINCH to the
  // terminal's foreground process group (ioctl_tty(2)), so a full-screen
  // program redraws itself.
  Result<void> set_window_size(WindowSize size) const;
  // ECHO on or off.
  Result<void> set_echo(bool on) const;
  // cfmakeraw(3), see PtyOptions::raw.
  Result<void> set_raw() const;

 private:
  Pty(Fd fd, std::string name) noexcept : fd_(std::move(fd)), name_(std::move(name)) {}
  Fd fd_;
  std::string name_;
};

struct Pty::Pair {
  Pty master;
  Fd slave;
};

// ---------------------------------------------------------------- Process

struct Output;
struct AnyExit;

// A running or finished child, owned through its pidfd. Move-only.
class Process {
 public:
  Process() noexcept = default;
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  // Adopts a pidfd for a child of this process (from pidfd_open or clone).
  static Process adopt(Fd pidfd, pid_t pid, std::string name) noexcept;

  bool valid() const noexcept { return pidfd_.valid(); }
  pid_t pid() const noexcept { return pid_; }
  int pidfd() const noexcept { return pidfd_.get(); }  // readable once the child exited
  const std::string& name() const noexcept { return name_; }
  // Process group id, when spawned with new_process_group()/process_group(); else 0.
  pid_t process_group() const noexcept { return pgid_; }

  // Parent ends of the pipes asked for with Stdio::pipe(); invalid otherwise.
  // Move them out to keep them, or close them to signal end of input.
  Fd& stdin_fd() noexcept { return stdin_; }
  Fd& stdout_fd() noexcept { return stdout_; }
  Fd& stderr_fd() noexcept { return stderr_; }
  // The parent's end of the terminal asked for with Command::pty() or
  // Stdio::pty(); invalid otherwise.
  Pty& pty() noexcept { return pty_; }

  // Waits for the child to end and reaps it. With a deadline, fails with
  // timed_out and leaves the child as it was. If something else in the
  // program already reaped it (waitpid(-1), wait_any_child), fails with
  // ECHILD at once instead of hanging. Once reaped, returns the same status
  // again on every call.
  Result<ExitStatus> wait(Deadline deadline = Deadline::never());
  // Non-blocking (WNOHANG): the status if it has ended, nullopt if it runs.
  Result<std::optional<ExitStatus>> try_wait();
  // The status if already reaped by this object.
  const std::optional<ExitStatus>& status() const noexcept { return status_; }

  // Sends `sig` through the pidfd (pidfd_send_signal): never hits a recycled pid.
  Result<void> signal(int sig) const;
  // Sends `sig` to the child's whole process group (kill(-pgid)); only for a
  // child started with new_process_group() or new_session().
  Result<void> signal_group(int sig) const;
  // SIGTERM, wait up to `grace`, then SIGKILL; returns how it ended (a
  // child that exits on SIGTERM reports signal() == SIGTERM).
  Result<ExitStatus> terminate(std::chrono::milliseconds grace = std::chrono::seconds(5));
  // SIGKILL and reap.
  Result<ExitStatus> kill();

  // Writes `input` to stdin (then closes it) while reading stdout and stderr
  // to the end, all at once so that no pipe can fill up and deadlock, then
  // reaps. Streams that are not pipes are skipped, except that a child with
  // a terminal (Command::pty) has it stand in for them: `input` is typed on
  // the terminal if stdin is not a pipe, followed by end of file (send_eof;
  // twice if the input does not end a line; not in raw mode), and what the
  // terminal shows — the child's output and, with echo on, the input —
  // goes to `out` if stdout is not a pipe, else to `err` if stderr is not.
  // On timeout the child is left running (its drop policy applies) and
  // timed_out is returned.
  Result<Output> communicate(std::string_view input = {}, Deadline deadline = Deadline::never());

  void set_on_drop(OnDrop policy,
                   std::chrono::milliseconds grace = std::chrono::seconds(5)) noexcept {
    on_drop_ = policy;
    drop_grace_ = grace;
  }
  OnDrop on_drop() const noexcept { return on_drop_; }
  // Hands the child to the background reaper and empties this object.
  void detach() noexcept;

 private:
  friend class Command;
  friend class Pipeline;
  friend Result<AnyExit> wait_any(std::span<Process> processes, Deadline deadline);
  Result<std::optional<ExitStatus>> reap(bool block);
  void drop() noexcept;

  Pidfd pidfd_;
  pid_t pid_ = 0;
  pid_t pgid_ = 0;
  pid_t owner_ = 0;  // getpid() of the creator: a fork child never acts on it
  std::string name_;
  Fd stdin_, stdout_, stderr_;
  Pty pty_;
  std::optional<ExitStatus> status_;
  bool reaped_elsewhere_ = false;  // waitid said ECHILD: the child is no longer ours
  OnDrop on_drop_ = OnDrop::kill;
  std::chrono::milliseconds drop_grace_{5000};
};

// Result of run-and-capture.
struct Output {
  ExitStatus status;
  std::string out;
  std::string err;
};

// ---------------------------------------------------------------- Command

// Describes a program to start. A builder: every setter returns *this.
class Command {
 public:
  // A program name without '/' is looked up in $PATH as execvp(3) does
  // (including the /bin/sh fallback for scripts without #!); one with '/' is
  // used as a path, as execv(3) does.
  explicit Command(std::string program);

  Command& arg(std::string a);
  template <class Range>
  Command& args(const Range& range) {
    for (const auto& a : range) arg(std::string(a));
    return *this;
  }
  Command& args(std::initializer_list<std::string_view> list) { return args<>(list); }
  // argv[0] as the child sees it (defaults to the program as given).
  Command& arg0(std::string name);

  // Environment: inherited by default; these edit the copy the child gets.
  Command& env(std::string_view name, std::string_view value);
  Command& env_remove(std::string_view name);
  Command& env_clear();
  Command& cwd(std::filesystem::path dir);

  Command& stdin_from(Stdio s);
  Command& stdout_to(Stdio s);
  Command& stderr_to(Stdio s);
  // Makes descriptor `source` of the parent appear as `target` in the child
  // (borrowed: it must stay open until spawn returns).
  Command& pass_fd(int source, int target);
  // Runs the child on a new pseudo-terminal, as ssh -t or script(1) do
  // (Python's pty.fork): stdin, stdout and stderr become the terminal
  // (Stdio::pty(); set a stream after this call to send it elsewhere), and
  // it becomes the child's controlling terminal, so that the child can
  // open /dev/tty, gets SIGINT for ^C and SIGWINCH on resize. The parent
  // talks to it through Process::pty(). The terminal is opened and set up
  // (window size, echo, raw) in the parent before the child starts.
  //
  // A controlling terminal belongs to a session, and only a session leader
  // can acquire one: the child always starts in a new session (as
  // new_session() does; process_group() == pid). new_process_group() is
  // then implied; process_group(pgid) cannot be honoured and spawn()
  // refuses it with EINVAL.
  Command& pty(PtyOptions options = {});

  // setpgid(0, 0): the child leads a new process group (signal_group() works).
  Command& new_process_group(bool on = true);
  // setpgid(0, pgid): join an existing group (used by Pipeline).
  Command& process_group(pid_t pgid);
  // setsid(): new session and process group, no controlling terminal.
  Command& new_session(bool on = true);
  // prctl(PR_SET_PDEATHSIG): the child gets `sig` when the parent *thread*
  // that spawned it ends (not the process; see prctl(2)). If the parent is
  // already gone when the child starts, the child exits at once.
  Command& die_with_parent(int sig = SIGKILL);
  Command& on_drop(OnDrop policy, std::chrono::milliseconds grace = std::chrono::seconds(5));

  // Starts the child. Exec failure is reported here ("spawn /no/such/prog:
  // No such file or directory (ENOENT)") and leaves no zombie. Every fd of
  // the parent except stdin/stdout/stderr and pass_fd() targets is closed in
  // the child. The child starts with an empty signal mask and default
  // dispositions for signals the parent catches, and SIGPIPE/SIGXFSZ reset
  // to default even if the parent ignores them (as Python's subprocess does).
  Result<Process> spawn() const;
  // Spawns, waits, returns how it ended (stdio as configured).
  Result<ExitStatus> status(Deadline deadline = Deadline::never()) const;
  // Run and capture: stdout and stderr are piped (unless set otherwise),
  // `input` is fed to stdin, all at the same time. If the deadline passes,
  // the child is killed and reaped, and timed_out is returned.
  Result<Output> output(std::string_view input = {}, Deadline deadline = Deadline::never()) const;

  const std::string& program() const noexcept { return program_; }
  const std::vector<std::string>& argv() const noexcept { return argv_; }
  // "ls -l /" for messages.
  std::string describe() const;

 private:
  friend class Pipeline;
  std::string program_;
  std::vector<std::string> argv_;
  std::vector<std::pair<std::string, std::optional<std::string>>> env_edits_;
  bool env_clear_ = false;
  std::optional<std::filesystem::path> cwd_;
  Stdio stdin_ = Stdio::inherit(), stdout_ = Stdio::inherit(), stderr_ = Stdio::inherit();
  std::vector<std::pair<int, int>> passed_fds_;
  std::optional<PtyOptions> pty_;
  std::optional<pid_t> pgid_;
  bool new_session_ = false;
  int death_signal_ = 0;
  OnDrop on_drop_ = OnDrop::kill;
  std::chrono::milliseconds drop_grace_{5000};
};

// ---------------------------------------------------------------- waiting for many

struct AnyExit {
  std::size_t index;  // which element of the span ended
  ExitStatus status;
};
// Waits until one of `processes` ends and reaps it (like os.wait(), but only
// among these). Already-reaped or empty entries are skipped; if none is left,
// fails with ECHILD.
Result<AnyExit> wait_any(std::span<Process> processes, Deadline deadline = Deadline::never());

// Waits for any child of this process, including orphans adopted as a
// subreaper — exactly os.wait(). It also reaps children owned by a Process
// object, whose wait() will then fail with ECHILD. With a deadline it checks
// with backoff (1 to 20 ms), because Linux offers no descriptor for "any
// child" without a SIGCHLD handler, which tether does not install.
Result<ExitStatus> wait_any_child(Deadline deadline = Deadline::never());
// Reaps every child that has already ended (WNOHANG loop).
Result<std::vector<ExitStatus>> reap_finished_children();

// PR_SET_CHILD_SUBREAPER: orphaned descendants are re-parented to this
// process instead of init, so it can reap them (see wait_any_child).
Result<void> set_child_subreaper(bool on = true);
Result<bool> is_child_subreaper();

// kill(-pgid, sig).
Result<void> signal_process_group(pid_t pgid, int sig);

// ---------------------------------------------------------------- Pipeline

// Commands joined by pipes, stdout of each into stdin of the next, like
// `ps aux | grep bash`. Each stage's own stderr setting applies.
class Pipeline {
 public:
  Pipeline() = default;
  explicit Pipeline(std::vector<Command> stages) : stages_(std::move(stages)) {}
  Pipeline& then(Command c) {
    stages_.push_back(std::move(c));
    return *this;
  }
  // Where the first stage reads from and the last writes to.
  Pipeline& stdin_from(Stdio s) {
    stdin_ = std::move(s);
    return *this;
  }
  Pipeline& stdout_to(Stdio s) {
    stdout_ = std::move(s);
    return *this;
  }
  // All stages in one new process group, as a shell does for a job.
  Pipeline& new_process_group(bool on = true) {
    new_group_ = on;
    return *this;
  }

  struct Running {
    std::vector<Process> stages;
    Fd stdin_fd;   // when stdin_from(Stdio::pipe())
    Fd stdout_fd;  // when stdout_to(Stdio::pipe())
    // Waits for every stage; statuses in stage order.
    Result<std::vector<ExitStatus>> wait(Deadline deadline = Deadline::never());
  };
  Result<Running> spawn() const;

  struct Outputs {
    std::vector<ExitStatus> statuses;  // one per stage, in order
    std::string out;                   // the last stage's stdout
    // True when every stage succeeded (bash's pipefail).
    bool success() const noexcept;
  };
  // Feeds `input` to the first stage, captures the last stage's stdout.
  // On timeout every stage is killed and reaped.
  Result<Outputs> output(std::string_view input = {}, Deadline deadline = Deadline::never()) const;

  std::string describe() const;  // "ps aux | grep bash"

 private:
  std::vector<Command> stages_;
  Stdio stdin_ = Stdio::inherit(), stdout_ = Stdio::inherit();
  bool new_group_ = false;
};

inline Pipeline operator|(Command a, Command b) {
  return Pipeline({std::move(a), std::move(b)});
}
inline Pipeline operator|(Pipeline p, Command c) {
  return std::move(p.then(std::move(c)));
}

// ---------------------------------------------------------------- fork

struct ForkOptions {
  // fork() in a process with other threads copies only the calling thread;
  // a lock another thread held (malloc's, stdio's, your own) stays locked
  // forever in the child. tether refuses with errc::unsafe_fork unless you
  // say the child only uses async-signal-safe calls (then exec or _exit).
  bool allow_threads = false;
  OnDrop on_drop = OnDrop::kill;
};

// Runs `child` in a forked copy of this process and returns the parent's
// handle. The child exits with the function's return value through _exit()
// after flushing stdio: no atexit handlers or static destructors of the
// parent's copy run twice. An exception escaping `child` exits with 70
// (EX_SOFTWARE). The pidfd is opened before the child may run, so the
// handle can never refer to a recycled pid.
Result<Process> fork(const std::function<int()>& child, ForkOptions options = {});

// The two-returns form of fork(2): in the parent, `process` is the child;
// in the child, in_child() is true and `process` is empty. The child must
// end with _exit() (or exec), never by returning through the parent's code.
struct Forked {
  bool in_child() const noexcept { return !process.valid(); }
  Process process;
};
Result<Forked> fork_here(ForkOptions options = {});

// Number of threads in this process (from /proc/self/stat).
Result<int> thread_count();

}  // namespace tether
