// The supervisor's table (src/supervise/table.hpp), cell by cell: every
// state a supervisor can be in, with every event, for a worker wanted up;
// then the cells where the want or the facts change the answer; then what
// must hold in every cell of the whole product.
#include <gtest/gtest.h>
#include <signal.h>

#include <string>

#include "internal.hpp"
#include "support.hpp"
#include "table.hpp"

namespace {

namespace sd = tether::supervise_detail;
using sd::Event;
using tether::Want;
using tether::WorkerState;
using S = WorkerState;

constexpr S kStates[] = {S::starting, S::up, S::stopping, S::backoff, S::down, S::exited};
constexpr Want kWants[] = {Want::up, Want::once, Want::down, Want::exit};
constexpr Event kEvents[] = {Event::up,           Event::once,       Event::down,   Event::exit,
                             Event::restart,      Event::ready,      Event::exited, Event::timer,
                             Event::spawn_failed, Event::over_memory};

std::string name(S s, Want w, Event e) {
  return std::string(tether::to_string(s)) + " / wants " + std::string(tether::to_string(w)) +
         " / " + std::string(sd::to_string(e));
}

sd::Transition T(S s, Want w, std::uint16_t a = sd::kNone) {
  return {s, w, a};
}

constexpr std::uint16_t kStart = sd::kDisarmTimer | sd::kSpawn;

struct Cell {
  S state;
  Event event;
  sd::Transition expected;
};

// Wanted up, default facts: on-failure, no readiness wait, nobody waiting
// for a report, restarts left, a failed exit after a short run.
const Cell kWantedUp[] = {
    {S::starting, Event::up, T(S::starting, Want::up)},
    {S::starting, Event::once, T(S::starting, Want::once)},
    {S::starting, Event::down, T(S::stopping, Want::down, sd::kTerm)},
    {S::starting, Event::exit, T(S::stopping, Want::exit, sd::kTerm)},
    {S::starting, Event::restart, T(S::stopping, Want::up, sd::kTerm)},
    {S::starting, Event::ready, T(S::up, Want::up)},
    {S::starting, Event::exited, T(S::backoff, Want::up, sd::kArmBackoff)},
    {S::starting, Event::timer, T(S::starting, Want::up)},
    {S::starting, Event::spawn_failed, T(S::backoff, Want::up, sd::kArmBackoff)},
    {S::starting, Event::over_memory, T(S::stopping, Want::up, sd::kTerm)},

    {S::up, Event::up, T(S::up, Want::up)},
    {S::up, Event::once, T(S::up, Want::once)},
    {S::up, Event::down, T(S::stopping, Want::down, sd::kTerm)},
    {S::up, Event::exit, T(S::stopping, Want::exit, sd::kTerm)},
    {S::up, Event::restart, T(S::stopping, Want::up, sd::kTerm)},
    {S::up, Event::ready, T(S::up, Want::up)},
    {S::up, Event::exited, T(S::backoff, Want::up, sd::kArmBackoff)},
    {S::up, Event::timer, T(S::up, Want::up)},
    {S::up, Event::spawn_failed, T(S::backoff, Want::up, sd::kArmBackoff)},
    {S::up, Event::over_memory, T(S::stopping, Want::up, sd::kTerm)},

    // Stopping wanted up (a restart, or stop then start): the exit we asked
    // for is not a crash; it starts again at once, whatever the policy.
    {S::stopping, Event::up, T(S::stopping, Want::up)},
    {S::stopping, Event::once, T(S::stopping, Want::once)},
    {S::stopping, Event::down, T(S::stopping, Want::down)},
    {S::stopping, Event::exit, T(S::stopping, Want::exit)},
    {S::stopping, Event::restart, T(S::stopping, Want::up)},
    {S::stopping, Event::ready, T(S::stopping, Want::up)},
    {S::stopping, Event::exited, T(S::up, Want::up, kStart | sd::kResetBackoff)},
    {S::stopping, Event::timer, T(S::stopping, Want::up, sd::kKill)},
    {S::stopping, Event::spawn_failed, T(S::backoff, Want::up, sd::kArmBackoff)},
    {S::stopping, Event::over_memory, T(S::stopping, Want::up)},

    {S::backoff, Event::up, T(S::up, Want::up, kStart | sd::kResetBackoff)},
    {S::backoff, Event::once, T(S::up, Want::once, kStart | sd::kResetBackoff)},
    {S::backoff, Event::down, T(S::down, Want::down, sd::kDisarmTimer)},
    {S::backoff, Event::exit, T(S::backoff, Want::exit, sd::kDisarmTimer | sd::kFinish)},
    {S::backoff, Event::restart, T(S::up, Want::up, kStart | sd::kResetBackoff)},
    {S::backoff, Event::ready, T(S::backoff, Want::up)},
    {S::backoff, Event::exited, T(S::backoff, Want::up)},
    {S::backoff, Event::timer, T(S::up, Want::up, kStart | sd::kCountRestart)},
    {S::backoff, Event::spawn_failed, T(S::backoff, Want::up, sd::kArmBackoff)},
    {S::backoff, Event::over_memory, T(S::backoff, Want::up)},

    {S::down, Event::up, T(S::up, Want::up, kStart | sd::kResetBackoff)},
    {S::down, Event::once, T(S::up, Want::once, kStart | sd::kResetBackoff)},
    {S::down, Event::down, T(S::down, Want::down, sd::kDisarmTimer)},
    {S::down, Event::exit, T(S::down, Want::exit, sd::kDisarmTimer | sd::kFinish)},
    {S::down, Event::restart, T(S::up, Want::up, kStart | sd::kResetBackoff)},
    {S::down, Event::ready, T(S::down, Want::up)},
    {S::down, Event::exited, T(S::down, Want::up)},
    {S::down, Event::timer, T(S::down, Want::up)},
    {S::down, Event::spawn_failed, T(S::backoff, Want::up, sd::kArmBackoff)},
    {S::down, Event::over_memory, T(S::down, Want::up)},

    {S::exited, Event::up, T(S::up, Want::up, kStart | sd::kResetBackoff)},
    {S::exited, Event::once, T(S::up, Want::once, kStart | sd::kResetBackoff)},
    {S::exited, Event::down, T(S::down, Want::down, sd::kDisarmTimer)},
    {S::exited, Event::exit, T(S::exited, Want::exit, sd::kDisarmTimer | sd::kFinish)},
    {S::exited, Event::restart, T(S::up, Want::up, kStart | sd::kResetBackoff)},
    {S::exited, Event::ready, T(S::exited, Want::up)},
    {S::exited, Event::exited, T(S::exited, Want::up)},
    {S::exited, Event::timer, T(S::exited, Want::up)},
    {S::exited, Event::spawn_failed, T(S::backoff, Want::up, sd::kArmBackoff)},
    {S::exited, Event::over_memory, T(S::exited, Want::up)},
};

TEST(SuperviseTable, EveryStateWithEveryEventWantedUp) {
  EXPECT_EQ(std::size(kWantedUp), std::size(kStates) * std::size(kEvents));
  for (const auto& c : kWantedUp) {
    auto got = sd::transition(c.state, Want::up, c.event, {});
    EXPECT_EQ(got, c.expected) << name(c.state, Want::up, c.event) << ": got "
                               << tether::to_string(got.state) << "/" << tether::to_string(got.want)
                               << " actions " << got.actions;
  }
}

TEST(SuperviseTable, TheExitOfAStopDependsOnTheWant) {
  sd::Facts f;
  EXPECT_EQ(sd::transition(S::stopping, Want::down, Event::exited, f),
            T(S::down, Want::down, sd::kDisarmTimer));
  EXPECT_EQ(sd::transition(S::stopping, Want::once, Event::exited, f),
            T(S::up, Want::once, kStart | sd::kResetBackoff));
  EXPECT_EQ(sd::transition(S::stopping, Want::exit, Event::exited, f),
            T(S::stopping, Want::exit, sd::kDisarmTimer | sd::kFinish));
  // The live bug: --restart never, stop --no-wait, then start before the
  // worker has ended. The start must not be lost.
  f.policy = tether::RestartPolicy::never;
  f.exit_success = true;
  auto after_stop = sd::transition(S::up, Want::up, Event::down, f);
  auto after_start = sd::transition(after_stop.state, after_stop.want, Event::up, f);
  auto after_exit = sd::transition(after_start.state, after_start.want, Event::exited, f);
  EXPECT_EQ(after_exit.state, S::up);
  EXPECT_TRUE(after_exit.actions & sd::kSpawn);
}

TEST(SuperviseTable, ACrashFollowsThePolicyAndTheBudget) {
  sd::Facts f;
  f.policy = tether::RestartPolicy::on_failure;
  f.exit_success = true;
  EXPECT_EQ(sd::transition(S::up, Want::up, Event::exited, f), T(S::exited, Want::up));
  f.exit_success = false;
  EXPECT_EQ(sd::transition(S::up, Want::up, Event::exited, f),
            T(S::backoff, Want::up, sd::kArmBackoff));
  f.ran_healthy = true;  // a run that lasted: again at once
  EXPECT_EQ(sd::transition(S::up, Want::up, Event::exited, f),
            T(S::up, Want::up, kStart | sd::kResetBackoff | sd::kCountRestart));
  f.restarts_left = false;
  EXPECT_EQ(sd::transition(S::up, Want::up, Event::exited, f), T(S::exited, Want::up, sd::kGiveUp));
  f = {};
  f.policy = tether::RestartPolicy::never;
  EXPECT_EQ(sd::transition(S::up, Want::up, Event::exited, f), T(S::exited, Want::up));
  f.policy = tether::RestartPolicy::always;
  f.exit_success = true;
  EXPECT_EQ(sd::transition(S::up, Want::up, Event::exited, f),
            T(S::backoff, Want::up, sd::kArmBackoff));
  // Wanted once (runit's o): it ends, it stays down.
  EXPECT_EQ(sd::transition(S::up, Want::once, Event::exited, f), T(S::down, Want::down));
}

TEST(SuperviseTable, TheFirstStartIsReportedToTetherOpen) {
  sd::Facts f;
  f.awaiting_report = true;
  EXPECT_EQ(sd::transition(S::down, Want::down, Event::up, f),
            T(S::up, Want::up, kStart | sd::kResetBackoff | sd::kReportOk));
  EXPECT_EQ(sd::transition(S::up, Want::up, Event::exited, f),
            T(S::exited, Want::exit, sd::kReportFailed | sd::kFinish));
  EXPECT_EQ(sd::transition(S::up, Want::up, Event::spawn_failed, f),
            T(S::exited, Want::exit, sd::kReportFailed | sd::kFinish));
  f.wait_ready = true;  // ok only once it says it is ready
  EXPECT_EQ(sd::transition(S::down, Want::down, Event::up, f),
            T(S::starting, Want::up, kStart | sd::kResetBackoff));
  EXPECT_EQ(sd::transition(S::starting, Want::up, Event::ready, f),
            T(S::up, Want::up, sd::kReportOk));
  // Told to exit while tether open still waits: it hears the failure.
  auto stop = sd::transition(S::starting, Want::up, Event::exit, f);
  auto end = sd::transition(stop.state, stop.want, Event::exited, f);
  EXPECT_TRUE(end.actions & sd::kReportFailed);
  EXPECT_TRUE(end.actions & sd::kFinish);
}

// Over its memory limit: stopped, and its end is a failure whatever its
// exit code, so the restart policy, max_restarts and the crash-loop backoff
// decide what follows (a worker that blows its limit at once restarts every
// backoff, doubling, not every check). A worker that was to run once is
// stopped; one tether open still waits for fails its start; a command given
// meanwhile (the supervisor then clears memory_stop) is done as asked.
TEST(SuperviseTable, OverMemoryIsAFailureTheRestartPolicyDecidesOn) {
  sd::Facts f;
  EXPECT_EQ(sd::transition(S::up, Want::up, Event::over_memory, f),
            T(S::stopping, Want::up, sd::kTerm));
  f.memory_stop = true;
  f.exit_success = true;  // a worker that exits 0 on SIGTERM still failed
  // A short run: the backoff, doubling, counts the restart when it fires.
  EXPECT_EQ(sd::transition(S::stopping, Want::up, Event::exited, f),
            T(S::backoff, Want::up, sd::kDisarmTimer | sd::kArmBackoff));
  // A long run: started again at once, counted, the backoff reset.
  f.ran_healthy = true;
  EXPECT_EQ(sd::transition(S::stopping, Want::up, Event::exited, f),
            T(S::up, Want::up, kStart | sd::kResetBackoff | sd::kCountRestart));
  // No restart left: it stays ended, and the log says why.
  f.restarts_left = false;
  EXPECT_EQ(sd::transition(S::stopping, Want::up, Event::exited, f),
            T(S::exited, Want::up, sd::kDisarmTimer | sd::kGiveUp));
  // --restart never: ended, not restarted.
  f.restarts_left = true;
  f.policy = tether::RestartPolicy::never;
  EXPECT_EQ(sd::transition(S::stopping, Want::up, Event::exited, f),
            T(S::exited, Want::up, sd::kDisarmTimer));
  // on-failure restarts it even though the code was 0; always does too.
  f.policy = tether::RestartPolicy::always;
  EXPECT_EQ(sd::transition(S::stopping, Want::up, Event::exited, f).state, S::up);
  // A stop (or exit) asked for meanwhile wins: the want decides.
  EXPECT_EQ(sd::transition(S::stopping, Want::down, Event::exited, f),
            T(S::down, Want::down, sd::kDisarmTimer));
  f = {};
  EXPECT_EQ(sd::transition(S::up, Want::once, Event::over_memory, f),
            T(S::stopping, Want::down, sd::kTerm));
  f.awaiting_report = true;
  f.wait_ready = true;
  EXPECT_EQ(sd::transition(S::starting, Want::up, Event::over_memory, f),
            T(S::stopping, Want::exit, sd::kTerm));
  // ... and its end is then reported as a failure, the directory removed.
  auto end = sd::transition(S::stopping, Want::exit, Event::exited, f);
  EXPECT_TRUE(end.actions & sd::kReportFailed);
  EXPECT_TRUE(end.actions & sd::kFinish);
  // A restart asked for (memory_stop cleared) starts it again at once.
  f = {};
  EXPECT_EQ(sd::transition(S::stopping, Want::up, Event::exited, f).state, S::up);
}

TEST(SuperviseTable, ExitIsFinal) {
  for (S s : kStates) {
    for (Event e : {Event::up, Event::once, Event::down, Event::restart}) {
      auto t = sd::transition(s, Want::exit, e, {});
      EXPECT_EQ(t, T(s, Want::exit)) << name(s, Want::exit, e);
    }
  }
}

// Over the whole product: what the loop relies on.
TEST(SuperviseTable, InvariantsOfEveryCell) {
  for (S s : kStates) {
    for (Want w : kWants) {
      for (Event e : kEvents) {
        for (int bits = 0; bits < 32; ++bits) {
          sd::Facts f;
          f.policy = static_cast<tether::RestartPolicy>(bits % 3);
          f.wait_ready = bits & 4;
          f.awaiting_report = bits & 8;
          f.exit_success = bits & 16;
          f.restarts_left = bits & 1;
          f.ran_healthy = bits & 2;
          auto t = sd::transition(s, w, e, f);
          auto where = name(s, w, e) + " facts " + std::to_string(bits);
          EXPECT_NE(t.state, S::dead_supervisor) << where;
          // spawn_failed comes right after a spawn that put the state at
          // starting or up: no worker runs then.
          bool running =
              (s == S::starting || s == S::up || s == S::stopping) && e != Event::spawn_failed;
          // A worker is spawned only when none runs, or the one that ran ended.
          if (t.actions & sd::kSpawn) {
            EXPECT_TRUE(!running || e == Event::exited) << where;
            EXPECT_TRUE(t.state == S::up || t.state == S::starting) << where;
            EXPECT_NE(t.want, Want::exit) << where;
          }
          // Signals go only to a worker that runs.
          if (t.actions & (sd::kTerm | sd::kKill)) {
            EXPECT_TRUE(running) << where;
          }
          // Finishing: nothing runs, nothing is started.
          if (t.actions & sd::kFinish) {
            EXPECT_TRUE(!running || e == Event::exited) << where;
            EXPECT_FALSE(t.actions & sd::kSpawn) << where;
            EXPECT_EQ(t.want, Want::exit) << where;
          }
          // A report goes out only while tether open waits, and only one.
          if (t.actions & (sd::kReportOk | sd::kReportFailed)) {
            EXPECT_TRUE(f.awaiting_report) << where;
            EXPECT_NE((t.actions & sd::kReportOk) != 0, (t.actions & sd::kReportFailed) != 0)
                << where;
          }
          // Backoff always has its timer armed.
          if (t.state == S::backoff && s != S::backoff) {
            EXPECT_TRUE(t.actions & sd::kArmBackoff) << where;
          }
          // Stopping always has its grace timer armed when it begins.
          if (t.state == S::stopping && s != S::stopping) {
            EXPECT_TRUE(t.actions & sd::kTerm) << where;
          }
        }
      }
    }
  }
}

}  // namespace

namespace {

TEST(SuperviseControl, LinesAreParsedWithoutTouchingAnything) {
  using K = sd::ControlCommand::Kind;
  auto p = [](std::string_view l) { return sd::parse_control_line(l); };
  EXPECT_EQ(p("exit").kind, K::event);
  EXPECT_EQ(p("exit").event, Event::exit);
  EXPECT_EQ(p("stop\r").event, Event::down);  // a CRLF client
  EXPECT_EQ(p("down").event, Event::down);
  EXPECT_EQ(p("start").event, Event::up);
  EXPECT_EQ(p("once").event, Event::once);
  EXPECT_EQ(p("restart").event, Event::restart);
  EXPECT_EQ(p("x").event, Event::exit);  // a runit letter on a line of its own
  EXPECT_EQ(p("t").kind, K::signal);
  EXPECT_EQ(p("t").signal, SIGTERM);
  auto send = p("send hello there");
  EXPECT_EQ(send.kind, K::send);
  EXPECT_EQ(send.text, "hello there");
  EXPECT_EQ(p("signal TERM").signal, SIGTERM);
  EXPECT_EQ(p("signal sighup").signal, SIGHUP);
  EXPECT_EQ(p("signal 10").signal, 10);
  for (auto bad :
       {"exit now", "signal BOGUS", "signal 0", "signal", "frobnicate", "", "exitstop"}) {
    auto c = p(bad);
    EXPECT_EQ(c.kind, K::bad) << bad;
    EXPECT_FALSE(c.why.empty()) << bad;
  }
  EXPECT_EQ(p("exit now").why, "unexpected argument");
  EXPECT_EQ(p("frobnicate").why, "unknown command");
  EXPECT_EQ(sd::parse_control_letter('u').event, Event::up);
  EXPECT_EQ(sd::parse_control_letter('k').signal, SIGKILL);
  EXPECT_EQ(sd::parse_control_letter('z').kind, K::bad);
}

// status.json as clients read it: every integer field is range-checked,
// at both ends (a non-negative JSON integer is stored unsigned, which once
// skipped the lower bound: fuzz/crashes/status/last-exit-signal-zero.json).
TEST(SuperviseStatusRecord, FieldsOutOfRangeAreRefusedAndGoodOnesRoundTrip) {
  const std::filesystem::path shown = "w/status.json";
  auto good = sd::decode_status(
      R"({"id":"deadbeef","name":"w","state":"backoff","want":"up","restart":"always",)"
      R"("pid":0,"restarts":2,"last_exit":{"signal":9}})",
      shown);
  ASSERT_TRUE(good.has_value()) << good.error().message();
  ASSERT_TRUE(good->last_exit_signal.has_value());
  EXPECT_EQ(*good->last_exit_signal, 9);
  EXPECT_EQ(good->restarts, 2);
  auto again = sd::decode_status(sd::encode_status(*good), shown);
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_EQ(sd::encode_status(*again), sd::encode_status(*good));
  for (const char* bad :
       {R"("last_exit":{"signal":0})", R"("last_exit":{"signal":65})",
        R"("last_exit":{"code":256})", R"("last_exit":{"code":-1})", R"("pid":-1)",
        R"("pid":4194305)", R"("restarts":-3)", R"("last_exit":7)", R"("pid":1.5)"}) {
    std::string text = std::string(R"({"id":"deadbeef","state":"up","want":"up",)") + bad + "}";
    auto w = sd::decode_status(text, shown);
    SCOPED_TRACE(text);
    TT_ASSERT_ERROR(w, tether::errc::bad_record);
    EXPECT_NE(w.error().message().find("w/status.json"), std::string::npos) << text;
  }
}

}  // namespace
