// The queue layer's shared segments (segment.hpp).
#include "segment.hpp"

#include <pthread.h>
#include <unistd.h>

#include <fmt/format.h>

namespace tether::detail {

namespace {

constexpr std::size_t kMaxMap = std::size_t{1} << 40;

std::string describe(const SegmentKind& kind, const std::string& name) {
  return name.empty() ? fmt::format("anonymous {}", kind.noun)
                      : fmt::format("{} {}", kind.noun, name);
}

// Waits for the creator to finish the header, then checks the prefix.
Result<void> check_prefix(const Mapping& map, std::size_t size, const SegmentKind& kind,
                          std::uint32_t header_bytes, Deadline ready, const std::string& what) {
  const auto* p = std::launder(reinterpret_cast<const SegmentPrefix*>(map.data()));
  auto not_ours = [&] {
    return fail(EINVAL, fmt::format("open {}: not a tether {}", what, kind.noun));
  };
  while (p->ready.load(std::memory_order_acquire) != kSegmentReady) {
    if (p->magic != 0 && p->magic != kind.magic) return not_ours();
    if (ready.expired())
      return fail(ETIMEDOUT, fmt::format("open {}: still being made at the deadline", what));
    ::usleep(1000);
  }
  if (p->magic != kind.magic) return not_ours();
  if (p->version != kind.version)
    return fail(EINVAL, fmt::format("open {}: a {} of version {}, not {}", what, kind.noun,
                                    p->version, kind.version));
  if (p->header_bytes != header_bytes)
    return fail(errc::bad_record,
                fmt::format("open {}: its header's layout is not this version's", what));
  if (p->map_bytes < size || p->map_bytes > kMaxMap)
    return fail(errc::bad_record, fmt::format("open {}: it says to map {} bytes, but holds {}",
                                              what, p->map_bytes, size));
  return {};
}

// Maps what an opener was handed, checked; `file` is the segment's.
Result<void> map_checked(Segment& seg, const detail::MemoryFd& file, const SegmentKind& kind,
                         std::uint32_t header_bytes, Deadline ready) {
  // Its maker sizes it (all at once) just after creating the name: an
  // empty segment may be one being made, and is waited for.
  auto size = file.size();
  for (; size && *size == 0 && !ready.expired(); size = file.size()) ::usleep(1000);
  if (!size) return std::unexpected(size.error());
  if (*size == 0)
    return fail(ETIMEDOUT, fmt::format("open {}: still being made at the deadline", seg.what));
  if (*size < header_bytes)
    return fail(EINVAL, fmt::format("open {}: {} bytes is too small to be a {}", seg.what, *size,
                                    kind.noun));
  auto first = file.map();
  if (!first) return std::unexpected(first.error());
  if (auto ok = check_prefix(*first, *size, kind, header_bytes, ready, seg.what); !ok)
    return std::unexpected(ok.error());
  const std::size_t want =
      std::launder(reinterpret_cast<const SegmentPrefix*>(first->data()))->map_bytes;
  if (want > *size) {
    // Nothing was locked through the first mapping: it may go.
    auto grown = Mapping::map_growable(file.fd(), want, Access::read_write, seg.what);
    if (!grown) return std::unexpected(grown.error());
    seg.map = std::move(*grown);
  } else {
    seg.map = std::move(*first);
  }
  seg.map.keep_mapped();
  return {};
}

}  // namespace

Result<std::shared_ptr<Segment>> create_segment(const SegmentKind& kind, const std::string& name,
                                                std::size_t size, std::size_t map_bytes,
                                                std::uint32_t header_bytes, mode_t mode) {
  auto seg = std::make_shared<Segment>();
  seg->what = describe(kind, name);
  const std::string op =
      name.empty() ? fmt::format("make an {}", seg->what) : fmt::format("create {}", kind.noun);
  if (map_bytes < size) map_bytes = size;
  if (size < header_bytes || map_bytes > kMaxMap)
    return fail(EINVAL, fmt::format("{}: {} bytes to map is not {} to {}", op, map_bytes,
                                    header_bytes, kMaxMap));
  int fd = -1;
  if (!name.empty()) {
    auto shm = PosixSharedMemory::create(name, size, mode);
    if (!shm) return fail(shm.error(), op);
    seg->named = std::make_unique<PosixSharedMemory>(std::move(*shm));
    fd = seg->named->fd();
  } else {
    auto mem = Memfd::create(size, fmt::format("tether-{}", kind.noun));
    if (!mem) return fail(mem.error(), op);
    seg->memory = std::move(*mem);
    fd = seg->memory.fd();
  }
  auto map = map_bytes > size ? Mapping::map_growable(fd, map_bytes, Access::read_write, seg->what)
                              : seg->file().map();
  if (!map) return std::unexpected(map.error());
  map->keep_mapped();
  seg->map = std::move(*map);
  auto& p = seg->prefix();
  p.magic = kind.magic;
  p.version = kind.version;
  p.header_bytes = header_bytes;
  p.map_bytes = map_bytes;
  return seg;
}

Result<std::shared_ptr<Segment>> open_segment(const SegmentKind& kind, const std::string& name,
                                              std::uint32_t header_bytes, Deadline ready) {
  auto seg = std::make_shared<Segment>();
  seg->what = describe(kind, name);
  auto shm = PosixSharedMemory::open(name);
  if (!shm) return fail(shm.error(), fmt::format("open {}", kind.noun));
  if (auto ok = map_checked(*seg, *shm, kind, header_bytes, ready); !ok)
    return std::unexpected(ok.error());
  seg->named = std::make_unique<PosixSharedMemory>(std::move(*shm));
  return seg;
}

Result<std::shared_ptr<Segment>> adopt_segment(const SegmentKind& kind, Fd memory,
                                               std::uint32_t header_bytes) {
  auto seg = std::make_shared<Segment>();
  seg->what = describe(kind, "");
  auto mem = Memfd::from_fd(std::move(memory), header_bytes);
  if (!mem) return fail(mem.error(), fmt::format("adopt a {}", kind.noun));
  if (auto ok = map_checked(*seg, *mem, kind, header_bytes, Deadline::immediate()); !ok)
    return std::unexpected(ok.error());
  seg->memory = std::move(*mem);
  return seg;
}

std::atomic<std::uint32_t> g_fork_generation{1};

std::uint32_t fork_generation() noexcept {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr,
                     [] { g_fork_generation.fetch_add(1, std::memory_order_relaxed); });
    return true;
  }();
  (void)registered;
  return g_fork_generation.load(std::memory_order_relaxed);
}

}  // namespace tether::detail
