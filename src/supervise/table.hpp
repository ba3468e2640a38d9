// The supervisor's behaviour, as one table: a pure function from (state,
// wanted state, event) to (new state, new want, actions), in the manner of
// s6-supervise's actions[state][event]. The poll loop (supervisor.cpp) only
// turns descriptors into events and carries out the actions; nothing is
// decided anywhere else, and nothing here touches the system, so every cell
// is tested on its own (tests/test_supervise_table.cpp). docs/supervisor.md
// shows the table.
#pragma once

#include <cstdint>
#include <string_view>

#include "tether/supervise.hpp"

namespace tether::supervise_detail {

enum class Event : std::uint8_t {
  up,            // u, start, up
  once,          // o, once
  down,          // d, stop, down
  exit,          // x, exit; SIGTERM or SIGINT to the supervisor; its directory lost
  restart,       // restart
  ready,         // the worker wrote its readiness line
  exited,        // the worker ended (Facts say how)
  timer,         // the timer fired: the grace ran out (stopping) or the backoff did (backoff)
  spawn_failed,  // a spawn action failed
  over_memory,   // the worker and its processes hold more than its memory limit
};
inline constexpr int kEventCount = 10;

// Actions, carried out in this order by the loop.
enum Action : std::uint16_t {
  kNone = 0,
  kDisarmTimer = 1 << 0,
  kTerm = 1 << 1,          // SIGTERM + SIGCONT to the worker's group; arm the grace timer
  kKill = 1 << 2,          // SIGKILL to the worker's group
  kResetBackoff = 1 << 3,  // the next crash waits backoff_min again
  kCountRestart = 1 << 4,  // one more restart (shown, and counted against max_restarts)
  kSpawn = 1 << 5,         // start the worker (a failure comes back as spawn_failed)
  kArmBackoff = 1 << 6,    // wait the next backoff (doubling), then `timer`
  kReportOk = 1 << 7,      // tell tether open the worker runs (or is ready)
  kReportFailed = 1 << 8,  // tell tether open it did not start
  kGiveUp = 1 << 9,        // log "not restarting: N restarts already"
  kFinish = 1 << 10,       // remove the directory and exit
};

// What the loop knows that the table needs. None of it is decided here.
struct Facts {
  RestartPolicy policy = RestartPolicy::on_failure;
  bool wait_ready = false;       // a new worker is `starting` until it says it is ready
  bool awaiting_report = false;  // tether open still waits for the first answer
  bool restarts_left = true;     // max_restarts not reached
  bool exit_success = false;     // for `exited`: code 0
  bool ran_healthy = false;      // for `exited`: it ran at least healthy_after
  bool memory_stop = false;      // for `exited` while stopping: the stop was the memory limit's
};

struct Transition {
  WorkerState state;
  Want want;
  std::uint16_t actions = kNone;
  friend bool operator==(const Transition&, const Transition&) = default;
};

Transition transition(WorkerState state, Want want, Event event, const Facts& facts) noexcept;

// One line of the control FIFO, parsed (the supervisor acts on it; nothing
// here touches the system): an event for the table, a message for the
// worker's input, a signal for its group, or a refusal with its reason.
struct ControlCommand {
  enum class Kind { event, send, signal, bad };
  Kind kind = Kind::bad;
  Event event = Event::up;
  int signal = 0;
  std::string_view text;  // send: the message; bad: the offending text
  std::string_view why;   // bad: "unknown command", …
  std::string_view word;  // the verb or letter, for the log
};
ControlCommand parse_control_line(std::string_view line) noexcept;

// A runit/daemontools control letter (supervise/control): the same kinds.
ControlCommand parse_control_letter(char c) noexcept;

std::string_view to_string(Event e) noexcept;

}  // namespace tether::supervise_detail
