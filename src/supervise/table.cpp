#include "table.hpp"

#include <signal.h>

#include <utility>

namespace tether::supervise_detail {

namespace {

using S = WorkerState;

bool is_command(Event e) {
  return e == Event::up || e == Event::once || e == Event::down || e == Event::restart;
}

// Starting the worker from any state: `starting` until it says it is ready
// when it was asked to, else `up` at once (and tether open hears "ok").
Transition spawn(Want want, const Facts& f, std::uint16_t extra) {
  std::uint16_t acts = extra | kDisarmTimer | kSpawn;
  if (f.awaiting_report && !f.wait_ready) acts |= kReportOk;
  return {f.wait_ready ? S::starting : S::up, want, acts};
}

// The worker ended by itself while wanted up: the restart policy decides.
Transition crashed(const Facts& f) {
  bool allowed = f.policy == RestartPolicy::always ||
                 (f.policy == RestartPolicy::on_failure && !f.exit_success);
  if (!allowed) return {S::exited, Want::up, kNone};
  if (!f.restarts_left) return {S::exited, Want::up, kGiveUp};
  // A run that lasted is restarted at once; a crash loop waits, doubling.
  if (f.ran_healthy) return spawn(Want::up, f, kResetBackoff | kCountRestart);
  return {S::backoff, Want::up, kArmBackoff};
}

// Directory removal, and the report tether open may still wait for.
std::uint16_t finish(const Facts& f) {
  return kDisarmTimer | kFinish | (f.awaiting_report ? kReportFailed : kNone);
}

Transition spawn_failed(WorkerState state, Want want, const Facts& f) {
  if (f.awaiting_report) return {S::exited, Want::exit, kReportFailed | kFinish};
  if (want == Want::exit) return {state, want, finish(f)};
  if (f.policy == RestartPolicy::never || !f.restarts_left) return {S::exited, want, kNone};
  return {S::backoff, want, kArmBackoff};
}

// A running worker holds more than its memory limit: it is stopped, and
// its end then counts as a failure (see stopping): the restart policy,
// max_restarts and the crash-loop backoff decide what follows, as they do
// for a worker the kernel's OOM killer ended. One that was to run once is
// stopped; before tether open has heard that it started, the start fails.
Transition over_memory(Want w, const Facts& f) {
  if (f.awaiting_report) return {S::stopping, Want::exit, kTerm};
  return {S::stopping, w == Want::once ? Want::down : w, kTerm};
}

// A worker is running: starting or up.
Transition running(WorkerState s, Want w, Event e, const Facts& f) {
  switch (e) {
    case Event::up:
      return {s, Want::up, kNone};
    case Event::once:
      return {s, Want::once, kNone};
    case Event::down:
      return {S::stopping, Want::down, kTerm};
    case Event::exit:
      return {S::stopping, Want::exit, kTerm};
    case Event::restart:
      return {S::stopping, Want::up, kTerm};  // started again when it has ended
    case Event::ready:
      if (s != S::starting) return {s, w, kNone};
      return {S::up, w, f.awaiting_report ? kReportOk : kNone};
    case Event::exited:
      if (f.awaiting_report) return {S::exited, Want::exit, kReportFailed | kFinish};
      if (w == Want::once || w == Want::down) return {S::down, Want::down, kNone};
      if (w == Want::exit) return {s, w, finish(f)};
      return crashed(f);
    case Event::timer:
      return {s, w, kNone};  // a stale timer: nothing is armed while running
    case Event::spawn_failed:
      return spawn_failed(s, w, f);
    case Event::over_memory:
      return over_memory(w, f);
  }
  return {s, w, kNone};
}

// SIGTERM sent, SIGKILL armed: the next exit is the one we asked for, so
// the restart policy does not apply to it; the want decides what follows.
Transition stopping(Want w, Event e, const Facts& f) {
  switch (e) {
    case Event::up:
    case Event::restart:
      return {S::stopping, Want::up, kNone};
    case Event::once:
      return {S::stopping, Want::once, kNone};
    case Event::down:
      return {S::stopping, Want::down, kNone};
    case Event::exit:
      return {S::stopping, Want::exit, kNone};
    case Event::ready:
      return {S::stopping, w, kNone};
    case Event::exited:
      if (f.memory_stop && w == Want::up) {
        // Stopped over its memory limit: a failure, whatever its exit code.
        Facts failed = f;
        failed.exit_success = false;
        Transition t = crashed(failed);
        t.actions |= kDisarmTimer;  // the grace timer
        return t;
      }
      if (w == Want::up || w == Want::once) return spawn(w, f, kResetBackoff);
      if (w == Want::down) return {S::down, w, kDisarmTimer};
      return {S::stopping, w, finish(f)};
    case Event::timer:
      return {S::stopping, w, kKill};  // the grace ran out
    case Event::spawn_failed:
      return spawn_failed(S::stopping, w, f);
    case Event::over_memory:
      return {S::stopping, w, kNone};  // already on its way out
  }
  return {S::stopping, w, kNone};
}

// No worker: waiting to restart one (backoff), or not wanted (down), or
// ended and not restarted (exited).
Transition idle(WorkerState s, Want w, Event e, const Facts& f) {
  switch (e) {
    case Event::up:
    case Event::restart:
      return spawn(Want::up, f, kResetBackoff);
    case Event::once:
      return spawn(Want::once, f, kResetBackoff);
    case Event::down:
      return {S::down, Want::down, kDisarmTimer};
    case Event::exit:
      return {s, Want::exit, finish(f)};
    case Event::ready:
    case Event::exited:
      return {s, w, kNone};  // no worker: stale news
    case Event::timer:
      if (s == S::backoff && (w == Want::up || w == Want::once)) {
        return spawn(w, f, kCountRestart);
      }
      return {s, w, kNone};
    case Event::spawn_failed:
      return spawn_failed(s, w, f);
    case Event::over_memory:
      return {s, w, kNone};  // no worker: stale news
  }
  return {s, w, kNone};
}

}  // namespace

Transition transition(WorkerState state, Want want, Event event, const Facts& facts) noexcept {
  // Once asked to exit, a supervisor only finishes: no later command
  // brings the worker back.
  if (want == Want::exit && is_command(event)) return {state, want, kNone};
  switch (state) {
    case S::starting:
    case S::up:
      return running(state, want, event, facts);
    case S::stopping:
      return stopping(want, event, facts);
    case S::backoff:
    case S::down:
    case S::exited:
      return idle(state, want, event, facts);
    case S::dead_supervisor:
      break;  // a client's view, never a supervisor's state
  }
  return {state, want, kNone};
}

namespace {

// The signal a runit/daemontools control letter sends, or 0.
int letter_signal(char c) noexcept {
  switch (c) {
    case 't':
      return SIGTERM;
    case 'k':
      return SIGKILL;
    case 'p':
      return SIGSTOP;
    case 'c':
      return SIGCONT;
    case 'h':
      return SIGHUP;
    case 'a':
      return SIGALRM;
    case 'i':
      return SIGINT;
    case 'q':
      return SIGQUIT;
    case '1':
      return SIGUSR1;
    case '2':
      return SIGUSR2;
    default:
      return 0;
  }
}

ControlCommand bad(std::string_view why, std::string_view text) noexcept {
  ControlCommand c;
  c.why = why;
  c.text = text;
  return c;
}

}  // namespace

ControlCommand parse_control_letter(char c) noexcept {
  ControlCommand out;
  static constexpr std::pair<char, Event> letters[] = {
      {'u', Event::up}, {'d', Event::down}, {'o', Event::once}, {'x', Event::exit}};
  for (auto [l, e] : letters) {
    if (c == l) {
      out.kind = ControlCommand::Kind::event;
      out.event = e;
      return out;
    }
  }
  if (int sig = letter_signal(c)) {
    out.kind = ControlCommand::Kind::signal;
    out.signal = sig;
    return out;
  }
  return bad("unknown control letter", {});
}

ControlCommand parse_control_line(std::string_view line) noexcept {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() == 1) {
    auto c = parse_control_letter(line[0]);
    if (c.kind != ControlCommand::Kind::bad) {
      c.word = line;
      return c;
    }
  }
  std::string_view verb = line.substr(0, line.find(' '));
  std::string_view rest =
      line.size() > verb.size() ? line.substr(verb.size() + 1) : std::string_view();
  ControlCommand c;
  c.word = verb;
  if (verb == "send") {
    c.kind = ControlCommand::Kind::send;
    c.text = rest;
    return c;
  }
  if (verb == "signal") {
    auto sig = parse_signal(rest);
    if (!sig) return bad("unknown signal", rest);
    c.kind = ControlCommand::Kind::signal;
    c.signal = *sig;
    return c;
  }
  static constexpr std::pair<std::string_view, Event> verbs[] = {
      {"exit", Event::exit},      {"stop", Event::down}, {"down", Event::down},
      {"start", Event::up},       {"up", Event::up},     {"once", Event::once},
      {"restart", Event::restart}};
  for (auto [word, e] : verbs) {
    if (verb == word) {
      if (!rest.empty()) return bad("unexpected argument", line);
      c.kind = ControlCommand::Kind::event;
      c.event = e;
      return c;
    }
  }
  return bad("unknown command", line);
}

std::string_view to_string(Event e) noexcept {
  switch (e) {
    case Event::up:
      return "up";
    case Event::once:
      return "once";
    case Event::down:
      return "down";
    case Event::exit:
      return "exit";
    case Event::restart:
      return "restart";
    case Event::ready:
      return "ready";
    case Event::exited:
      return "exited";
    case Event::timer:
      return "timer";
    case Event::spawn_failed:
      return "spawn-failed";
    case Event::over_memory:
      return "over-memory";
  }
  return "?";
}

}  // namespace tether::supervise_detail
