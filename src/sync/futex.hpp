// Futexes on shared words, for the sync layer (futex(2), futex_waitv(2)).
#pragma once

#include <linux/futex.h>
#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "tether/sync.hpp"

namespace tether::detail {

// Sleeps while `word` holds `expected`, until woken or `deadline`
// (timed_out). A change of value, a wake-up or a signal all return success:
// callers re-check what they wait for. Shared (not FUTEX_PRIVATE_FLAG): the
// word is in memory other processes map.
Result<void> futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                        Deadline deadline);
// Wakes up to `count` sleepers on `word`.
void futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept;

// The futex word of a glibc mutex: its first int, `__data.__lock`, whose
// robust protocol is the kernel's (futex(2), "Robust futexes"): the
// holder's thread id, FUTEX_WAITERS when someone sleeps on it,
// FUTEX_OWNER_DIED once the kernel saw the holder die.
std::atomic<std::uint32_t>& lock_word(Mutex& m) noexcept;

// Sleeps until one of `leases` (robust mutexes held by others) is
// unlocked or its holder dies, or `word` (if given) leaves `expected`, or
// `deadline`. It marks each held lease FUTEX_WAITERS, so that glibc's
// unlock and the kernel's death handling wake us, and waits on all of them
// at once with futex_waitv (Linux 5.16). Leases that are free or dead now
// return at once (the caller takes them); with `skip_free`, free ones are
// ignored instead. Without futex_waitv it naps a millisecond at a time.
Result<void> wait_for_leases(std::span<Mutex* const> leases, const std::atomic<std::uint32_t>* word,
                             std::uint32_t expected, bool skip_free, Deadline deadline);

// A pause for spinning loops.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace tether::detail
