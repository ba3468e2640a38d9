// tether/supervise.hpp — the worker supervisor: state directory, worker
// records, the control FIFO protocol, and the inbox a worker reads.
// Library target tether::supervise (tether::tether never pulls it in).
//
// Each worker has its own small supervisor process (as runit's runsv and
// s6-supervise do; there is no central daemon) and a directory
//
//   <state>/<id>/control        FIFO, 0600: one text command per line
//   <state>/<id>/lock           held (flock) by the live supervisor
//   <state>/<id>/status.json    replaced atomically on every change
//   <state>/<id>/spec.json      how the worker was asked to run (0600)
//   <state>/<id>/worker.log …   the worker's output, timestamped, rotated (.1 .2 …)
//   <state>/<id>/supervise/     runit/daemontools view: control (a FIFO of
//                               single letters), ok, status (20 bytes)
//   <state>/.names/<name>       a symbolic link to the id that holds the name
//
// Clients never talk to a supervisor in any other way: `tether list` reads
// the status files and tests the locks; `tether exit` writes "exit" into the
// FIFO and waits (on a pidfd) for the supervisor to end; a shell can do the
// same with `echo exit > <state>/<id>/control`. See docs/supervisor.md.
//
//   auto dir = tether::StateDir::open_default();          // created 0700, verified
//   auto workers = tether::list_workers(*dir);
//   for (auto& w : workers->workers) fmt::print("{} {}\n", w.id, to_string(w.state));
//   auto web = tether::find_worker(*dir, "web");           // by pid, id or name
//   tether::send_command(*web, "send reload");
//
// A worker program receives lines sent with `tether send` on its standard
// input; WorkerInbox reads them either blocking or by polling.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tether/sys.hpp"

namespace tether {

// ---------------------------------------------------------------- states

// What a worker is doing. dead_supervisor is seen only by clients: the
// directory's supervisor is gone (killed, or the machine rebooted).
enum class WorkerState { starting, up, stopping, backoff, down, exited, dead_supervisor };
// What its supervisor is asked to keep it at. once: up, but not restarted
// when it ends (runit's `o`).
enum class Want { up, once, down, exit };
enum class RestartPolicy { always, on_failure, never };

// The words status.json and the command line use ("up", "on-failure", …).
std::string_view to_string(WorkerState s) noexcept;
std::string_view to_string(Want w) noexcept;
std::string_view to_string(RestartPolicy p) noexcept;
std::optional<WorkerState> parse_worker_state(std::string_view s) noexcept;
std::optional<Want> parse_want(std::string_view s) noexcept;
std::optional<RestartPolicy> parse_restart_policy(std::string_view s) noexcept;

// ---------------------------------------------------------------- state directory

// The directory that holds every worker's directory: $TETHER_DIR, else
// $XDG_RUNTIME_DIR/tether, else /run/tether for root, else /tmp/tether-<uid>
// (made absolute: workers get it under any working directory).
//
// It is checked once, then held open: every ancestor must belong to us or
// to root and not be writable by others unless it is sticky (as /tmp is);
// the directory itself must be a real directory of ours with no access for
// others (created 0700 if missing). Afterwards every file is reached
// relative to the held descriptor (openat, renameat, unlinkat), so a
// directory swapped in after the check is never used.
class StateDir {
 public:
  static std::filesystem::path default_path();
  static Result<StateDir> open(std::filesystem::path path, bool create = true);
  // open(default_path()), except that when that is /tmp/tether-<uid> and
  // another user has taken the name first (anyone can create in /tmp), it
  // falls back to /tmp/tether-<uid>.1, .2, .3: an existing one of ours is
  // preferred, so every command finds the same one.
  static Result<StateDir> open_default(bool create = true);
  // Adopts a descriptor already checked by open() (tether-supervise gets it
  // from tether open); `path` is for messages and for the workers.
  static StateDir adopt(Fd fd, std::filesystem::path path) noexcept;

  const std::filesystem::path& path() const noexcept { return path_; }
  int fd() const noexcept { return fd_ ? fd_->get() : -1; }
  std::filesystem::path worker_path(std::string_view id) const { return path_ / id; }

 private:
  std::filesystem::path path_;
  std::shared_ptr<Fd> fd_;  // shared: WorkerInfo records refer to it
};

// ---------------------------------------------------------------- worker records

// What a supervisor says of its worker (status.json), plus whether the
// supervisor is alive (its lock is held).
struct WorkerInfo {
  std::string id;
  std::string name;
  std::filesystem::path dir;  // for people and for inotify; I/O goes through dir_fd
  WorkerState state = WorkerState::dead_supervisor;
  Want want = Want::down;
  pid_t pid = 0;  // the worker's pid (0 when it is not running)
  // /proc/<pid>/stat's start time (clock ticks since boot): the worker's
  // identity, so a recycled pid is never taken for it.
  std::uint64_t pid_start = 0;
  pid_t supervisor_pid = 0;
  std::int64_t since_ms = 0;    // unix time of the last state change
  std::int64_t started_ms = 0;  // unix time the current run began (0: not running)
  int restarts = 0;
  // Control commands the supervisor has acted on (start, stop, restart,
  // once, exit, signals; a no-op counts too): read before sending one, it
  // lets a client wait for its command's effect, not an earlier state.
  std::uint64_t commands = 0;
  std::optional<int> last_exit_code;
  std::optional<int> last_exit_signal;
  RestartPolicy restart_policy = RestartPolicy::on_failure;
  std::vector<std::string> command;
  std::string set;  // the set it was started with (tether up), or ""
  bool supervisor_alive = false;
  std::shared_ptr<Fd> state_dir;  // the StateDir it was read from

  // "exited with code 3", "killed by SIGKILL", or "" if it never ended.
  std::string last_exit() const;
  // How long the current run has lasted (zero when it is not running).
  std::chrono::milliseconds uptime() const;
  // The worker's current log file (rotated ones are .1, .2, …).
  std::filesystem::path log_path() const;
  // "web (3f9a2c1e)", or the id alone.
  std::string display_name() const;
};

struct WorkerList {
  std::vector<WorkerInfo> workers;  // sorted by name then id
  // Directories skipped because their record is malformed (bad_record) or
  // unreadable (a FIFO or a symbolic link where status.json should be):
  // reported, never fatal.
  std::vector<Error> skipped;
};

// Every worker directory, with a record each. A directory whose status
// cannot be read is listed as dead_supervisor when no supervisor holds its
// lock, and left out while one is starting.
Result<WorkerList> list_workers(const StateDir& dir);

// One worker by id, name, worker pid or supervisor pid. no_such_worker
// ("no worker with pid 999999", "no worker with id or name 'web'");
// ambiguous_name when several live workers have that name (names given
// with --name are unique; default ones need not be).
Result<WorkerInfo> find_worker(const StateDir& dir, std::string_view key);

// Writes one command line (shorter than PIPE_BUF, so it is never mixed with
// another client's) into the worker's control FIFO, which must be a FIFO of
// ours (not_a_fifo). A worker whose supervisor is gone is not_running.
Result<void> send_command(const WorkerInfo& worker, std::string_view line,
                          Deadline deadline = std::chrono::seconds(5));

// Asks the worker's supervisor to stop the worker and exit ("exit"), then,
// unless `wait` is false, waits until it has: woken by the supervisor's
// pidfd, taken before the command is sent, not by polling. A worker that
// another client stopped meanwhile counts as stopped; one whose supervisor
// is dead is not_running.
Result<void> exit_worker(const WorkerInfo& worker, Deadline deadline, bool wait = true);

// Waits until the worker's status says `state`, with a pid other than
// `not_pid` when that is given (a restart), and, when `past_commands` is
// given, once the supervisor has acted on more commands than that (pass the
// `commands` of a WorkerInfo read before sending one: then a state the
// worker was in before the command arrived does not count). Woken by
// inotify on the worker's directory. supervisor_gone if its supervisor ends
// first.
Result<WorkerInfo> wait_worker_state(const WorkerInfo& worker, WorkerState state, Deadline deadline,
                                     pid_t not_pid = 0,
                                     std::optional<std::uint64_t> past_commands = std::nullopt);

// Removes the directory of a worker whose supervisor is dead, first killing
// (SIGKILL) what is left of its process group: only processes proved to be
// the worker's (in its session or group, started after it, with its
// TETHER_WORKER_ID), never a process that got a recycled pid. Refuses a
// live one (EBUSY).
Result<void> prune_worker(const WorkerInfo& worker);

// Removes what supervisors that died while starting or exiting left behind:
// hidden ".<id>.new" / ".<id>.gone" directories whose lock no one holds, and
// name claims of workers that are gone. Returns how many were removed.
Result<int> prune_leftovers(const StateDir& dir);

// The worker's directory, opened through the state directory it was listed
// from (never by its path again), and a regular file in it (O_NOFOLLOW,
// O_NONBLOCK: a FIFO or a link planted there is refused, never waited on).
Result<Fd> open_worker_directory(const WorkerInfo& worker);
Result<Fd> open_worker_file(const WorkerInfo& worker, std::string_view name);

struct SupervisorSpec;

// The spec the worker's supervisor was started with (<dir>/spec.json,
// written 0600 before the directory appeared): what `tether save` records
// and what `tether up` compares with a file's definition. bad_record if it
// does not parse.
Result<SupervisorSpec> read_worker_spec(const WorkerInfo& worker);

// ---------------------------------------------------------------- usage

// What a worker and the processes it started use now, from /proc.
struct WorkerUsage {
  int processes = 0;  // the worker and every live process of its session
  // CPU time (user + system) of those processes and of the children they
  // waited for (cutime, cstime: a child that ended counts once its parent
  // waited for it; not one the supervisor reaped, or whose parent ignores
  // SIGCHLD), and that
  // time over the worker's uptime, as ps's %CPU (100 is one core busy all
  // along).
  std::chrono::milliseconds cpu{0};
  double cpu_percent = 0;
  std::uint64_t rss_bytes = 0;  // resident memory, shared pages counted in each process
  std::uint64_t pss_bytes = 0;  // proportional share: shared pages divided among their users
};

// The usage of each worker (nullopt for one not running), in one pass over
// /proc: a process counts for a worker when it is in the worker's session
// (the worker leads one) and started no earlier than the worker, whose own
// start time must match the record (a recycled pid is never counted).
// `pss` reads each process's smaps_rollup too, the costly part.
std::vector<std::optional<WorkerUsage>> worker_usage(const std::vector<WorkerInfo>& workers,
                                                     bool pss = true);

// ---------------------------------------------------------------- names

// A worker name: 1 to 64 characters of [A-Za-z0-9._+@:-], not starting with
// '.' or '-', not only digits (it would read as a pid), not 8 hex digits (it
// would read as an id). Returns why not, or "" when it is good.
std::string check_worker_name(std::string_view name);

// ---------------------------------------------------------------- the supervisor

struct SupervisorSpec {
  std::string id;                    // directory name (tether open picks one)
  std::string name;                  // for people
  bool unique_name = false;          // claim the name: refuse if a live worker has it
  std::vector<std::string> command;  // argv (tether open puts its demo worker here)
  std::vector<std::pair<std::string, std::string>> env;
  std::filesystem::path cwd;
  RestartPolicy restart = RestartPolicy::on_failure;
  int max_restarts = -1;                          // -1: no limit
  std::chrono::milliseconds grace{5000};          // SIGTERM to SIGKILL
  std::chrono::milliseconds healthy_after{1000};  // a run this long resets the backoff
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{30000};
  // The worker runs on a pseudo-terminal (tether open --tty): for programs
  // that buffer their output or behave differently when it is not a
  // terminal. Its output then reaches the log line by line; input from
  // `tether send` is typed into the terminal (not echoed back).
  bool tty = false;
  bool wait_ready = false;  // the worker writes a line on fd `ready_fd` when ready
  int ready_fd = 3;
  // How often the supervisor checks that its directory is still at its name
  // (a move raises no event it could watch cheaply; see supervisor.cpp).
  std::chrono::milliseconds dir_check{60000};
  std::uint64_t log_max_bytes = 1u << 20;
  int log_keep = 3;  // rotated files kept besides the current one
  // The worker is restarted when it and every process it started hold more
  // resident memory than this (bytes; 0: no limit), measured every
  // memory_check from /proc (see supervisor.cpp), and logged with the
  // figures. Its stop counts as a failure: the restart policy decides.
  std::uint64_t memory_limit = 0;
  std::chrono::milliseconds memory_check{1000};
  // The supervisor starts with the worker down (as runit's `down` file):
  // `tether start` brings it up. How a worker stopped when it was saved
  // comes back after a reboot (tether open --down).
  bool start_down = false;
  // For workers started from a set's file (tether up): the set's name, the
  // definition this worker is an instance of, and the definitions it starts
  // after (so `down` and `resurrect` keep the order without the file).
  std::string set;
  std::string definition;
  std::vector<std::string> after;
};

// Runs a supervisor in this process until it is told to exit (or gets
// SIGTERM/SIGINT). It creates the worker's directory, starts the worker and
// then reports how the start went on `report_fd` (see supervise/launch.hpp:
// "<id> ok <worker pid> <supervisor pid>" or "<id> error <why>") and closes
// it. Returns the process exit code.
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
  LineReader reader_{1 << 20};
};

}  // namespace tether
