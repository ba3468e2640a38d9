// tether/supervise.hpp — the worker supervisor: state directory, worker
// records, the control FIFO protocol, and the inbox a worker reads.
//
// Each worker has its own small supervisor process (as runit's runsv and
// s6-supervise do; there is no central daemon) and a directory
//
//   <state>/<id>/control        FIFO, 0600: one text command per line
//   <state>/<id>/lock           held (flock) by the live supervisor
//   <state>/<id>/status.json    replaced atomically on every change
//   <state>/<id>/worker.log …   the worker's output, timestamped, rotated (.1 .2 …)
//   <state>/<id>/supervise/     runit/daemontools view: control (a FIFO of
//                               single letters), ok, status (20 bytes)
//
// Clients never talk to a supervisor in any other way: `tether list` reads
// the status files and tests the locks; `tether exit` writes "exit" into the
// FIFO and waits (on a pidfd) for the supervisor to end; a shell can do the
// same with `echo exit > <state>/<id>/control`. See docs/supervisor.md.
//
//   auto dir = tether::StateDir::open_default();          // created 0700, verified
//   auto workers = tether::list_workers(*dir);
//   for (auto& w : *workers) fmt::print("{} {} {}\n", w.id, w.pid, w.state);
//   tether::send_command(*dir, "web", "send reload", 2s);  // by pid, id or name
//
// A worker program receives lines sent with `tether send` on its standard
// input; WorkerInbox reads them either blocking or by polling.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tether/sys.hpp"

namespace tether {

// ---------------------------------------------------------------- state directory

// The directory that holds every worker's directory: $TETHER_DIR, else
// $XDG_RUNTIME_DIR/tether, else /run/tether for root, else /tmp/tether-<uid>.
// It is created 0700 if missing; an existing one must be a real directory
// (not a symbolic link), owned by us, and not accessible to others.
class StateDir {
 public:
  static std::filesystem::path default_path();
  static Result<StateDir> open(std::filesystem::path path, bool create = true);
  static Result<StateDir> open_default(bool create = true) { return open(default_path(), create); }
  const std::filesystem::path& path() const noexcept { return path_; }
  std::filesystem::path worker_path(std::string_view id) const { return path_ / id; }

 private:
  std::filesystem::path path_;
};

// ---------------------------------------------------------------- worker records

// What a supervisor says of its worker (status.json), plus whether the
// supervisor is alive (its lock is held).
struct WorkerInfo {
  std::string id;
  std::string name;
  std::filesystem::path dir;
  // starting, up, stopping, down, exited, backoff; dead-supervisor when the
  // supervisor is gone (killed, or the machine rebooted) and left the directory.
  std::string state;
  std::string want;  // up, down or exit
  pid_t pid = 0;     // the worker's pid (0 when it is not running)
  pid_t supervisor_pid = 0;
  std::int64_t since_ms = 0;    // unix time of the last state change
  std::int64_t started_ms = 0;  // unix time the current run began (0: not running)
  int restarts = 0;
  std::optional<int> last_exit_code;
  std::optional<int> last_exit_signal;
  std::string restart_policy;
  std::vector<std::string> command;
  bool supervisor_alive = false;

  // "exited with code 3", "killed by SIGKILL", or "" if it never ended.
  std::string last_exit() const;
  // How long the current run has lasted (zero when it is not running).
  std::chrono::milliseconds uptime() const;
  // The worker's current log file (rotated ones are .1, .2, …).
  std::filesystem::path log_path() const;
};

// Every worker directory under `dir`, sorted by name then id. Directories
// whose status cannot be read are reported with state "dead-supervisor"
// when no supervisor holds their lock, and skipped while one is starting.
Result<std::vector<WorkerInfo>> list_workers(const StateDir& dir);

// One worker by id, name, worker pid or supervisor pid:
// "no worker with pid 999999", "no worker named web".
Result<WorkerInfo> find_worker(const StateDir& dir, std::string_view key);

// Writes one command line (shorter than PIPE_BUF, so it is never mixed with
// another client's) into the worker's control FIFO. A worker whose
// supervisor is gone is "worker web is not running (its supervisor is not
// listening)" (ENXIO).
Result<void> send_command(const WorkerInfo& worker, std::string_view line,
                          Deadline deadline = std::chrono::seconds(5));

// Asks the worker's supervisor to stop the worker and exit ("exit"), then,
// unless `wait` is false, waits until it has: woken by the supervisor's
// pidfd, taken before the command is sent, not by polling. A worker that
// another client stopped meanwhile counts as stopped; one whose supervisor
// is dead is "not running" (ENXIO).
Result<void> exit_worker(const WorkerInfo& worker, Deadline deadline, bool wait = true);

// Waits until the worker's status file says `state` (one of those above),
// with a pid other than `not_pid` when that is given (a restart), or its
// supervisor ends: woken by inotify on the worker's directory.
Result<WorkerInfo> wait_worker_state(const WorkerInfo& worker, std::string_view state,
                                     Deadline deadline, pid_t not_pid = 0);

// Removes the directory of a worker whose supervisor is dead, first killing
// (SIGKILL) whatever is left of its process group. Refuses a live one.
Result<void> prune_worker(const WorkerInfo& worker);

// ---------------------------------------------------------------- the supervisor

enum class RestartPolicy { always, on_failure, never };

struct SupervisorSpec {
  std::string id;                    // directory name (tether open picks one)
  std::string name;                  // for people; unique among live workers
  std::vector<std::string> command;  // argv (tether open puts its demo worker here)
  std::vector<std::pair<std::string, std::string>> env;
  std::filesystem::path cwd;
  RestartPolicy restart = RestartPolicy::on_failure;
  int max_restarts = -1;                          // -1: no limit
  std::chrono::milliseconds grace{5000};          // SIGTERM to SIGKILL
  std::chrono::milliseconds healthy_after{1000};  // a run this long resets the backoff
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{30000};
  bool wait_ready = false;  // the worker writes a line on fd `ready_fd` when ready
  int ready_fd = 3;
  std::uint64_t log_max_bytes = 1u << 20;
  int log_keep = 3;  // rotated files kept besides the current one
};

// The spec as one line of JSON and back, for handing it to a supervisor
// started as a separate program (`tether-supervise DIR SPEC`).
std::string encode_spec(const SupervisorSpec& spec);
Result<SupervisorSpec> decode_spec(std::string_view json);

// The entry point of the `tether-supervise` program (and of the hidden
// `tether _supervise`): argv = {name, "_supervise", DIR, ID, SPEC, [ID, SPEC]…},
// the report pipe on fd 3. One spec: runs its supervisor. Several: forks one
// supervisor each (reporting "<id> forked <pid>") and returns. Every
// supervisor reports "<id> ok <worker pid> <supervisor pid>" or "<id> error
// <why>". Returns the exit code.
int supervise_main(int argc, char** argv);

// Runs a supervisor in this process until it is told to exit (or gets
// SIGTERM/SIGINT). It creates the worker's directory, starts the worker and
// then writes one line to `report_fd` — "ok <pid>" or "error <message>" —
// and closes it, so the caller (`tether open`) knows how the start went.
// Returns the process exit code.
int run_supervisor(const StateDir& dir, const SupervisorSpec& spec, int report_fd);

// ---------------------------------------------------------------- the worker's side

// Lines sent to this worker (`tether send ID MESSAGE`) arrive on its
// standard input; the two ways the reference workers read their FIFO:
//
//   auto inbox = tether::WorkerInbox::standard_input();
//   while (auto line = inbox.next())          // blocking: waits for a command
//     handle(*line);
//   // or, polling each second:
//   for (;;) { if (auto l = inbox.poll(1s); l && *l) handle(**l); else idle(); }
class WorkerInbox {
 public:
  explicit WorkerInbox(int fd) noexcept : fd_(fd) {}
  static WorkerInbox standard_input() noexcept { return WorkerInbox(0); }

  // The next line (without its newline). end_of_stream when the supervisor
  // closed the input (the worker is being stopped).
  Result<std::string> next(Deadline deadline = Deadline::never());
  // Waits up to `wait` for a line: nullopt if none came.
  Result<std::optional<std::string>> poll(Deadline wait);
  // The fd to add to your own poll/epoll loop.
  int fd() const noexcept { return fd_; }

  // Tells the supervisor the worker is ready (tether open --wait-ready):
  // writes a line to the fd named by $TETHER_READY_FD and closes it. Does
  // nothing when the variable is not set.
  static Result<void> notify_ready();

 private:
  int fd_;
  std::string buffer_;
  bool eof_ = false;
};

// The demo worker built into the tether binary: logs every line it receives;
// with `poll_interval` it polls and logs "FIFO is empty" while idle, else it
// blocks. Ends on end of input or SIGTERM. Returns the exit code.
int run_demo_worker(std::optional<std::chrono::milliseconds> poll_interval);

}  // namespace tether
