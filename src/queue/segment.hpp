// The shared segment under every object of the queue layer (Queue, Value,
// Array, Dict): named (POSIX shared memory, owned by its creator) or
// anonymous (a memfd), mapped once per process and never unmapped (it holds
// robust mutexes: glibc bug 14485), with a header that starts with a common
// prefix, validated before anything else in it is trusted.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "tether/shm.hpp"
#include "tether/sys.hpp"

namespace tether::detail {

// The first bytes of every queue-layer segment. Written by the creator;
// `ready` last (release), once the rest of the header is.
struct SegmentPrefix {
  std::uint64_t magic = 0;
  std::uint32_t version = 0;
  std::uint32_t header_bytes = 0;
  std::atomic<std::uint32_t> ready{0};
  std::uint32_t reserved0 = 0;
  // Bytes of address space each process maps (at least the segment's size
  // when made; more for a segment that grows in place, see Dict).
  std::uint64_t map_bytes = 0;
};
static_assert(sizeof(SegmentPrefix) == 32);

inline constexpr std::uint32_t kSegmentReady = 0x59444552;  // "REDY"

// What one kind of segment is: its magic, version and name in messages.
struct SegmentKind {
  std::uint64_t magic;
  std::uint32_t version;
  const char* noun;  // "queue", "shared value", "dict"
};

// What every participant of a segment in this process shares.
struct Segment {
  Segment() noexcept : creator(::getpid()) {}
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  // A fork child's copy neither removes the name (it is the parent's) nor
  // closes anything the parent's copy would (it leaks the small object).
  ~Segment() {
    if (::getpid() != creator) (void)named.release();
  }
  std::unique_ptr<PosixSharedMemory> named;
  Memfd memory;
  Mapping map;
  std::string what;  // "queue /jobs", "anonymous dict"
  pid_t creator;

  int fd() const noexcept { return named ? named->fd() : memory.fd(); }
  const detail::MemoryFd& file() const noexcept {
    return named ? static_cast<const detail::MemoryFd&>(*named) : memory;
  }
  std::byte* data() const noexcept { return map.data(); }
  SegmentPrefix& prefix() const noexcept {
    return *std::launder(reinterpret_cast<SegmentPrefix*>(map.data()));
  }
  // Marks the header written (after the creator has filled it in).
  void publish() const noexcept { prefix().ready.store(kSegmentReady, std::memory_order_release); }
};

// A new segment of `size` bytes (reserved), mapped over `map_bytes` (0:
// `size`), its prefix filled in but not ready: the caller writes the rest
// of its header, then calls publish(). Named when `name` is not empty (EEXIST
// if taken), else a memfd. `op` starts error messages ("create queue").
Result<std::shared_ptr<Segment>> create_segment(const SegmentKind& kind, const std::string& name,
                                                std::size_t size, std::size_t map_bytes,
                                                std::uint32_t header_bytes, mode_t mode);

// An existing named segment, or one received as a memfd: its prefix waited
// for (up to `ready`) and checked (magic, version, header_bytes, sizes).
// The caller checks the rest of its header.
Result<std::shared_ptr<Segment>> open_segment(const SegmentKind& kind, const std::string& name,
                                              std::uint32_t header_bytes, Deadline ready);
Result<std::shared_ptr<Segment>> adopt_segment(const SegmentKind& kind, Fd memory,
                                               std::uint32_t header_bytes);

// Bumped in every fork child: an object inherited across fork() is used
// from a process that is not its maker. fork_generation() starts the
// counting (once) and reads it; the fast paths read the counter itself.
extern std::atomic<std::uint32_t> g_fork_generation;
std::uint32_t fork_generation() noexcept;

}  // namespace tether::detail
