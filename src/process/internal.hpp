// Private helpers shared by the process layer's translation units.
#pragma once

#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <string_view>

#include "tether/process.hpp"

namespace tether::detail {

// waitid(2) as the kernel has it: glibc's wrapper lacks the rusage argument.
inline int waitid_rusage(idtype_t type, id_t id, siginfo_t* info, int options, rusage* ru) {
  return static_cast<int>(::syscall(SYS_waitid, type, id, info, options, ru));
}

// Converts a filled siginfo from waitid(WEXITED).
ExitStatus status_from_siginfo(const siginfo_t& info, const rusage& ru) noexcept;

// Feeds `input` to `in` (closing it when done) while reading `out` and `err`
// to end of stream, all non-blocking under one poll, so no pipe can fill up
// and deadlock. Any of the three may be invalid (skipped).
Result<void> pump(Fd& in, std::string_view input, Fd& out, std::string& out_text, Fd& err,
                  std::string& err_text, Deadline deadline, std::string_view what);

// Hands an unreaped child to the background reaper thread.
void detach_to_reaper(Fd pidfd) noexcept;

}  // namespace tether::detail
