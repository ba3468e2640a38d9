// tether/sys/backoff.hpp — one capped doubling pause, for every retry loop.
//
//   tether::Backoff backoff{1ms, 50ms};
//   for (;;) {
//     if (try_once()) return ok;
//     if (!backoff.wait(deadline)) return timed_out;   // 1, 2, 4 ... 50, 50 ms
//   }
//
// For the waits Linux gives no event for: room in another socket's backlog
// (unix_connect), a reader blocked in its own open(2) of a FIFO
// (Fifo::open_writer), a System V queue (no descriptor), "any child ended"
// (wait_any_child). Everything that has a descriptor polls it instead.
#pragma once

#include <algorithm>
#include <chrono>

#include "tether/sys.hpp"

namespace tether {

class Backoff {
 public:
  using duration = std::chrono::nanoseconds;

  // First pause `first`, each next one twice the last, never more than `cap`.
  constexpr Backoff(duration first, duration cap) noexcept
      : first_(first), cap_(std::max(first, cap)), next_(first) {}

  // The pause to take now; the following one doubles (up to the cap).
  constexpr duration next() noexcept {
    duration now = next_;
    next_ = std::min(next_ * 2, cap_);
    return now;
  }
  // Sleeps for next(), cut short at `deadline`. False, without sleeping, if
  // the deadline has already passed: the caller gives up (timed out).
  // A signal does not end the pause early (the sleep resumes).
  [[nodiscard]] bool wait(Deadline deadline);
  // Starts again from the first pause.
  constexpr void reset() noexcept { next_ = first_; }

 private:
  duration first_, cap_, next_;
};

}  // namespace tether
