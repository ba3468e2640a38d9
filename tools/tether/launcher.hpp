// The entry points the tether command's programs run that are not
// commands of their own: the launcher of supervisors (tether-supervise, and
// `tether _supervise` when that program is missing) and the demo worker.
#pragma once

#include <chrono>
#include <optional>

namespace tether_cli {

// tether-supervise: reads the launch from fd 0 (tether/supervise/launch.hpp),
// then runs the one supervisor here, or forks one per spec and returns.
// Returns the exit code.
int launcher_main();

// The demo worker built into the tether binary: logs every line it receives;
// with `poll_interval` it polls and logs "FIFO is empty" while idle, else it
// blocks. Ends on end of input or SIGTERM. Returns the exit code.
int run_demo_worker(std::optional<std::chrono::milliseconds> poll_interval);

}  // namespace tether_cli
