// Value and Array in shared memory (tether/queue/value.hpp).
#include "tether/queue/value.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "segment.hpp"

namespace tether::detail {

namespace {
constexpr std::uint64_t kBlockMagic = 0x4b434c4252485454;  // "TTHRBLCK"
constexpr std::uint32_t kBlockVersion = 1;
constexpr std::uint64_t kMaxData = std::uint64_t{1} << 40;

std::uint64_t round_up(std::uint64_t n, std::uint64_t to) noexcept {
  return (n + to - 1) / to * to;
}

std::string type_name(const SharedBlock::Type& t) {
  const std::uint32_t c = t.code;
  if (c == 1) return "bool";
  if ((c & 0xf0) == 0x10) return fmt::format("int{}", (c & 0xf) * 8);
  if ((c & 0xf0) == 0x20) return fmt::format("uint{}", (c & 0xf) * 8);
  if ((c & 0xf0) == 0x40) return fmt::format("float{}", (c & 0xf) * 8);
  return fmt::format("{}-byte type", t.size);
}
}  // namespace

struct BlockHeader {
  SegmentPrefix prefix;
  std::uint32_t elem_size = 0;
  std::uint32_t elem_align = 0;
  std::uint32_t type_code = 0;
  std::uint32_t copies = 0;
  std::uint64_t count = 0;
  std::uint64_t data_offset = 0;
  std::uint64_t stride = 0;
  std::uint64_t total = 0;
  std::atomic<std::uint32_t> active{0};  // which copy holds a Value
  std::uint32_t reserved = 0;
  std::atomic<std::uint64_t> owner_deaths{0};
  alignas(64) Mutex lock;
};

namespace {

struct Layout {
  std::uint64_t data_offset, stride, total;
};

Result<Layout> layout(const SharedBlock::Type& t, std::uint64_t count, unsigned copies,
                      const std::string& op) {
  if (t.size == 0 || t.align == 0 || !std::has_single_bit(t.align) || t.align > 4096)
    return fail(EINVAL,
                fmt::format("{}: an element of {} bytes aligned to {}", op, t.size, t.align));
  if (count > kMaxData / t.size)
    return fail(EINVAL,
                fmt::format("{}: {} elements of {} bytes is over 1 TiB", op, count, t.size));
  const std::uint64_t a = std::max<std::uint64_t>(64, t.align);
  Layout l{};
  l.data_offset = round_up(sizeof(BlockHeader), a);
  l.stride = round_up(count * t.size, a);
  l.total = l.data_offset + copies * l.stride;
  return l;
}

}  // namespace

SharedBlock::SharedBlock() noexcept = default;
SharedBlock::SharedBlock(SharedBlock&&) noexcept = default;
SharedBlock& SharedBlock::operator=(SharedBlock&&) noexcept = default;
SharedBlock::~SharedBlock() = default;

Result<SharedBlock> SharedBlock::make(const char* noun, const std::string& name, Type type,
                                      std::size_t count, unsigned copies, mode_t mode,
                                      const void* initial) {
  const std::string op = name.empty() ? fmt::format("make an anonymous {}", noun)
                                      : fmt::format("create {} {}", noun, name);
  auto l = layout(type, count, copies, op);
  if (!l) return std::unexpected(l.error());
  const SegmentKind kind{kBlockMagic, kBlockVersion, noun};
  auto seg = create_segment(kind, name, l->total, 0, sizeof(BlockHeader), mode);
  if (!seg) return std::unexpected(seg.error());
  auto* h = ::new (static_cast<void*>((*seg)->data())) BlockHeader();
  h->elem_size = type.size;
  h->elem_align = type.align;
  h->type_code = type.code;
  h->copies = copies;
  h->count = count;
  h->data_offset = l->data_offset;
  h->stride = l->stride;
  h->total = l->total;
  std::byte* data = (*seg)->data() + l->data_offset;
  for (std::size_t i = 0; i < count; ++i) std::memcpy(data + i * type.size, initial, type.size);
  h->prefix.magic = kind.magic;
  h->prefix.version = kind.version;
  h->prefix.header_bytes = sizeof(BlockHeader);
  h->prefix.map_bytes = (*seg)->map.size();
  (*seg)->publish();
  SharedBlock b;
  b.seg_ = std::move(*seg);
  b.h_ = h;
  b.data_ = data;
  b.count_ = count;
  b.stride_ = l->stride;
  return b;
}

namespace {

Result<SharedBlock::Type> checked(const Segment& seg, const SharedBlock::Type& want,
                                  unsigned copies) {
  const auto* h = std::launder(reinterpret_cast<const BlockHeader*>(seg.data()));
  auto bad = [&](std::string why) {
    return fail(errc::bad_record, fmt::format("open {}: {}", seg.what, why));
  };
  const SharedBlock::Type have{h->elem_size, h->elem_align, h->type_code};
  if (have.size != want.size || have.align != want.align ||
      (have.code != 0 && want.code != 0 && have.code != want.code))
    return fail(EINVAL, fmt::format("open {}: it holds {} (size {}, aligned {}), not {} (size "
                                    "{}, aligned {})",
                                    seg.what, type_name(have), have.size, have.align,
                                    type_name(want), want.size, want.align));
  if (h->copies != copies) {
    if (h->copies == 1 && copies == 2)
      return fail(EINVAL, fmt::format("open {}: it is a shared array (of {}), not a value",
                                      seg.what, h->count));
    if (h->copies == 2 && copies == 1)
      return fail(EINVAL, fmt::format("open {}: it is a shared value, not an array", seg.what));
    return bad("it is neither a shared value nor an array");
  }
  auto l = layout(have, h->count, copies, "open " + seg.what);
  if (!l) return bad(fmt::format("{} elements of {} bytes", h->count, have.size));
  if (h->data_offset != l->data_offset || h->stride != l->stride || h->total != l->total ||
      h->total > seg.map.size())
    return bad(
        fmt::format("its layout ({} bytes) does not fit its {} bytes", h->total, seg.map.size()));
  return have;
}

}  // namespace

Result<SharedBlock> SharedBlock::joined(Result<std::shared_ptr<Segment>> seg, Type type,
                                        unsigned copies) {
  if (!seg) return std::unexpected(seg.error());
  if (auto ok = checked(**seg, type, copies); !ok) return std::unexpected(ok.error());
  SharedBlock b;
  b.seg_ = std::move(*seg);
  b.h_ = std::launder(reinterpret_cast<BlockHeader*>(b.seg_->data()));
  b.data_ = b.seg_->data() + b.h_->data_offset;
  b.count_ = b.h_->count;
  b.stride_ = b.h_->stride;
  return b;
}

Result<SharedBlock> SharedBlock::open(const char* noun, const std::string& name, Type type,
                                      unsigned copies, Deadline ready) {
  const SegmentKind kind{kBlockMagic, kBlockVersion, noun};
  return joined(open_segment(kind, name, sizeof(BlockHeader), ready), type, copies);
}

Result<SharedBlock> SharedBlock::adopt(const char* noun, Fd memory, Type type, unsigned copies) {
  const SegmentKind kind{kBlockMagic, kBlockVersion, noun};
  return joined(adopt_segment(kind, std::move(memory), sizeof(BlockHeader)), type, copies);
}

Mutex& SharedBlock::lock() const noexcept {
  return h_->lock;
}

Result<MutexGuard> SharedBlock::lock_for(const char* op, Deadline deadline) const {
  if (h_ == nullptr) return fail(EINVAL, fmt::format("{} a shared value: none held", op));
  auto g = h_->lock.lock(deadline);
  if (!g) return fail(g.error(), fmt::format("{} {}", op, seg_->what));
  if (g->owner_died()) {
    h_->owner_deaths.fetch_add(1, std::memory_order_relaxed);
    if (auto ok = g->mark_consistent(); !ok)
      return fail(ok.error(), fmt::format("{} {}", op, seg_->what));
  }
  return g;
}

std::byte* SharedBlock::copy(unsigned which) const noexcept {
  return data_ + which * stride_;
}

std::atomic<std::uint32_t>& SharedBlock::active() const noexcept {
  return h_->active;
}

std::uint64_t SharedBlock::owner_deaths() const noexcept {
  return h_ ? h_->owner_deaths.load(std::memory_order_relaxed) : 0;
}

int SharedBlock::memory_fd() const noexcept {
  return seg_ ? seg_->fd() : -1;
}

const std::string& SharedBlock::description() const noexcept {
  static const std::string none = "no shared value";
  return seg_ ? seg_->what : none;
}

std::size_t SharedBlock::memory_bytes() const noexcept {
  return h_ ? h_->total : 0;
}

}  // namespace tether::detail
