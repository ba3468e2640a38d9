// The shared-memory Dict (tether/queue/dict.hpp).
//
// Layout: a header page, then blocks, each 64-byte aligned with a 48-byte
// header (Block), allocated by a bump pointer and, once freed, kept on a
// free list per size class (powers of two from 64 bytes). Two kinds:
//   entry  the key then the value, never changed while published;
//   table  the hash table: 2^k 64-bit words, open addressing, linear
//          probing. A word is 0 (empty) or an entry's offset / 64 with 16
//          bits of its key's hash above (a quick filter).
// h->table names the current table (offset | log2 of its slots).
//
// Writers hold h->lock (robust). What a reader can see changes only by
// single atomic stores: a table word (insert, replace, erase's moves), the
// table itself (after a rehash into a new one; the old one is never reused,
// so a reader still probing it reads what was true when it started), and
// an entry's generation: odd while published, even once freed. A reader
// checks an entry's generation before and after copying it, and retries
// if it changed (the entry was freed, maybe reused, meanwhile). "Not
// found" is checked against h->seq, odd while a writer changes anything
// and bumped to even after: erase closes the gap it leaves by moving later
// words back (no tombstones), and a key being moved could be missed.
//
// A writer killed -9: every published word names a whole entry, so every
// key has its old or new value. What it may leave: an entry allocated and
// not published, an old entry not yet freed, free lists half changed, a
// word duplicated by a half-done move, h->seq odd. repair() (the next
// locker, told by the robust mutex) rebuilds the table's words in place
// (deduplicated), the free lists and the count from a walk of all blocks.
#include "tether/queue/dict.hpp"

#include <sched.h>
#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <unordered_set>

#include <fmt/format.h>

#include "segment.hpp"
#include "tether/sync.hpp"

namespace tether {

namespace detail {
namespace {

constexpr std::uint64_t kDictMagic = 0x5443494452485454;  // "TTHRDICT"
constexpr std::uint32_t kDictVersion = 1;
constexpr SegmentKind kDictKind{kDictMagic, kDictVersion, "dict"};
constexpr std::uint64_t kArena = 4096;  // blocks start here
constexpr std::uint64_t kBlockHeader = 48;
constexpr unsigned kMinClass = 6, kMaxClass = 40, kClasses = kMaxClass - kMinClass + 1;
constexpr std::uint64_t kOffsetMask = (std::uint64_t{1} << 48) - 1;
constexpr int kOptimisticTries = 64;

enum Kind : std::uint32_t { kFreeKind = 0, kEntry = 1, kTable = 2 };

std::uint64_t round_up(std::uint64_t n, std::uint64_t to) noexcept {
  return (n + to - 1) / to * to;
}

std::uint64_t mix(std::uint64_t h) noexcept {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

std::uint64_t hash_key(std::string_view key, std::uint64_t seed) noexcept {
  std::uint64_t h = seed ^ (key.size() * 0x9e3779b97f4a7c15ULL);
  const char* p = key.data();
  std::size_t n = key.size();
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = std::rotl((h ^ w) * 0x9e3779b97f4a7c15ULL, 29);
    p += 8;
    n -= 8;
  }
  std::uint64_t w = 0;
  std::memcpy(&w, p, n);
  h = std::rotl((h ^ w) * 0x9e3779b97f4a7c15ULL, 29);
  return mix(h);
}

}  // namespace

// What a call is doing, for its error messages: made into text only when
// one is written ("get \"mode\" from").
struct Op {
  const char* verb;
  std::string_view key{};
  const char* prep = nullptr;  // nullptr: the call names no key
  std::string str() const {
    if (prep == nullptr) return verb;
    if (key.size() > 64) return fmt::format("{} \"{}…\" {}", verb, key.substr(0, 64), prep);
    return fmt::format("{} \"{}\" {}", verb, key, prep);
  }
};

struct Block {
  std::atomic<std::uint32_t> gen;  // odd: published entry; even: free (or a table)
  std::atomic<std::uint32_t> kind;
  std::atomic<std::uint32_t> cls;   // log2 of its bytes (entries)
  std::atomic<std::uint32_t> hash;  // the key's hash, low 32 bits
  std::atomic<std::uint32_t> key_len;
  std::atomic<std::uint32_t> value_len;
  std::atomic<std::uint64_t> bytes;  // the block's size, header included
  std::atomic<std::uint64_t> next_free;
  std::uint64_t reserved;
};
static_assert(sizeof(Block) == kBlockHeader);

struct DictHeader {
  SegmentPrefix prefix;
  std::uint64_t seed = 0;
  std::uint64_t max_entry = 0;
  std::uint64_t capacity = 0;
  std::uint32_t fixed = 0;
  std::uint32_t reserved = 0;

  alignas(64) Mutex lock;
  std::atomic<std::uint64_t> table{0};  // offset | log2(slots)
  std::atomic<std::uint64_t> bytes{0};  // the segment's size now
  std::atomic<std::uint64_t> bump{0};
  std::atomic<std::uint64_t> count{0};
  std::atomic<std::uint64_t> repairs{0};
  std::atomic<std::uint64_t> free_head[kClasses];

  alignas(64) std::atomic<std::uint64_t> seq{0};  // odd while a writer changes the table
};
static_assert(sizeof(DictHeader) <= kArena);

}  // namespace detail
}  // namespace tether

template <>
struct fmt::formatter<tether::detail::Op> : fmt::formatter<std::string> {
  auto format(const tether::detail::Op& op, format_context& ctx) const {
    return fmt::formatter<std::string>::format(op.str(), ctx);
  }
};

namespace tether {

using detail::Block;
using detail::DictHeader;
using detail::kBlockHeader;
using detail::round_up;

struct Dict::Impl {
  std::shared_ptr<detail::Segment> seg;
  DictHeader* h = nullptr;
  std::byte* base = nullptr;
  std::uint64_t reserved_bytes = 0;  // of address space mapped
  // The segment's size as this process last saw it (fstat): h->bytes is
  // trusted only up to it, so a lying header cannot make us touch a page
  // past the file's end.
  mutable std::atomic<std::uint64_t> known_file{0};
  mutable std::atomic<std::uint64_t> read_retries{0};

  const std::string& what() const noexcept { return seg->what; }

  // Bytes that may be touched now.
  std::uint64_t limit() const noexcept {
    const std::uint64_t b = std::min(h->bytes.load(std::memory_order_acquire), reserved_bytes);
    std::uint64_t k = known_file.load(std::memory_order_relaxed);
    if (b > k) [[unlikely]] {  // grown by another process (or a lie): look
      if (auto size = seg->file().size()) {
        k = *size;
        known_file.store(k, std::memory_order_relaxed);
      }
    }
    return std::min(b, k);
  }
  // [off, off + size) lies in what may be touched, 64-byte aligned, past
  // the header page: every offset read from the segment passes this first.
  bool fits(std::uint64_t off, std::uint64_t size) const noexcept {
    const std::uint64_t lim = limit();
    return off >= detail::kArena && off % 64 == 0 && off <= lim && size <= lim - off;
  }
  // A table word that names a whole entry block.
  bool word_ok(std::uint64_t w) const noexcept {
    const std::uint64_t off = offset_of(w);
    if (!fits(off, kBlockHeader)) return false;
    const std::uint32_t cls = block(off)->cls.load(std::memory_order_relaxed);
    return cls >= detail::kMinClass && cls <= detail::kMaxClass &&
           fits(off, std::uint64_t{1} << cls);
  }
  Block* block(std::uint64_t off) const noexcept {
    return std::launder(reinterpret_cast<Block*>(base + off));
  }
  std::byte* payload(std::uint64_t off) const noexcept { return base + off + kBlockHeader; }

  struct Table {
    std::atomic<std::uint64_t>* slot = nullptr;
    std::uint64_t mask = 0;
    std::uint64_t word = 0;  // h->table as read
  };

  std::unexpected<Error> corrupt(const detail::Op& op, std::string why) const {
    return fail(errc::bad_record, fmt::format("{} {}: {}", op, what(), why));
  }

  Result<Table> table(const detail::Op& op) const {
    Table t;
    t.word = h->table.load(std::memory_order_acquire);
    const std::uint64_t off = t.word & ~std::uint64_t{63};
    const unsigned lg = static_cast<unsigned>(t.word & 63);
    if (lg < 3 || lg > 32 || !fits(off, kBlockHeader + 16 + (std::uint64_t{8} << lg)))
      return corrupt(op, fmt::format("its table ({:#x}) lies outside it", t.word));
    t.slot =
        std::launder(reinterpret_cast<std::atomic<std::uint64_t>*>(base + off + kBlockHeader + 16));
    t.mask = (std::uint64_t{1} << lg) - 1;
    return t;
  }

  static std::uint64_t tag(std::uint64_t hash) noexcept { return (hash >> 48) << 48; }
  static std::uint64_t word_for(std::uint64_t off, std::uint64_t hash) noexcept {
    return (off >> 6) | tag(hash);
  }
  static std::uint64_t offset_of(std::uint64_t word) noexcept {
    return (word & detail::kOffsetMask) << 6;
  }

  // An entry's bounds, checked against what may be touched.
  bool entry_fits(std::uint64_t off, std::uint32_t key_len, std::uint32_t value_len,
                  std::uint32_t cls) const noexcept {
    if (cls < detail::kMinClass || cls > detail::kMaxClass) return false;
    const std::uint64_t size = std::uint64_t{1} << cls;
    return fits(off, size) && kBlockHeader + std::uint64_t{key_len} + value_len <= size;
  }

  enum class Read { found, absent, retry };

  // One optimistic lookup: `use(value bytes)` is called on a copy that is
  // then checked. Under the lock (no writer) it never retries.
  template <class Use>
  Result<Read> lookup(std::string_view key, std::uint64_t hash, const detail::Op& op,
                      Use&& use) const {
    const std::uint64_t s1 = h->seq.load(std::memory_order_acquire);
    auto t = table(op);
    if (!t) return std::unexpected(t.error());
    std::uint64_t i = hash & t->mask;
    for (std::uint64_t probes = 0; probes <= t->mask; ++probes, i = (i + 1) & t->mask) {
      const std::uint64_t w = t->slot[i].load(std::memory_order_acquire);
      if (w == 0) break;
      if ((w & ~detail::kOffsetMask) != tag(hash)) continue;
      const std::uint64_t off = offset_of(w);
      if (!fits(off, kBlockHeader))
        return corrupt(op, fmt::format("a table word ({:#x}) points outside it", w));
      Block* b = block(off);
      const std::uint32_t g1 = b->gen.load(std::memory_order_acquire);
      if ((g1 & 1) == 0) return Read::retry;  // freed since we read the word
      const std::uint32_t kl = b->key_len.load(std::memory_order_relaxed);
      const std::uint32_t vl = b->value_len.load(std::memory_order_relaxed);
      const std::uint32_t cls = b->cls.load(std::memory_order_relaxed);
      const bool fits = entry_fits(off, kl, vl, cls);
      const bool same =
          fits && kl == key.size() && std::memcmp(payload(off), key.data(), key.size()) == 0;
      if (same) use(std::span<const std::byte>(payload(off) + kl, vl));
      std::atomic_thread_fence(std::memory_order_acquire);
      if (b->gen.load(std::memory_order_relaxed) != g1) return Read::retry;
      if (!fits) return corrupt(op, fmt::format("an entry at {} does not fit its block", off));
      if (same) return Read::found;
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if ((s1 & 1) != 0 || h->seq.load(std::memory_order_relaxed) != s1 ||
        h->table.load(std::memory_order_relaxed) != t->word)
      return Read::retry;
    return Read::absent;
  }

  // A lookup that tries optimistically, then under the lock (which also
  // repairs after a dead writer that left h->seq odd).
  template <class Use>
  Result<bool> read(std::string_view key, const detail::Op& op, Use&& use) const {
    const std::uint64_t hash = hash_key(key);
    for (int i = 0; i < detail::kOptimisticTries; ++i) {
      auto r = lookup(key, hash, op, use);
      if (!r) return std::unexpected(r.error());
      if (*r != Read::retry) return *r == Read::found;
      read_retries.fetch_add(1, std::memory_order_relaxed);
      if (i > 8) ::sched_yield();
    }
    auto g = locked(op);
    if (!g) return std::unexpected(g.error());
    auto r = lookup(key, hash, op, use);
    if (!r) return std::unexpected(r.error());
    if (*r == Read::retry) return corrupt(op, "it changed under the lock");
    return *r == Read::found;
  }

  std::uint64_t hash_key(std::string_view key) const noexcept {
    return detail::hash_key(key, h->seed);
  }

  // ------------------------------------------------------------ writers

  Result<MutexGuard> locked(const detail::Op& op) const {
    auto g = h->lock.lock();
    if (!g) return fail(g.error(), fmt::format("{} {}", op, what()));
    if (g->owner_died()) {
      if (auto ok = repair(op); !ok) return std::unexpected(ok.error());
      h->repairs.fetch_add(1, std::memory_order_relaxed);
      if (auto ok = g->mark_consistent(); !ok)
        return fail(ok.error(), fmt::format("{} {}", op, what()));
    }
    return g;
  }

  // Under the lock: where `key` is (its slot), or where it would go.
  struct Place {
    std::uint64_t index = 0;
    std::uint64_t word = 0;  // 0: absent
  };
  Result<Place> find(const Table& t, std::string_view key, std::uint64_t hash,
                     const detail::Op& op) const {
    std::uint64_t i = hash & t.mask;
    for (std::uint64_t probes = 0; probes <= t.mask; ++probes, i = (i + 1) & t.mask) {
      const std::uint64_t w = t.slot[i].load(std::memory_order_relaxed);
      if (w == 0) return Place{i, 0};
      if ((w & ~detail::kOffsetMask) != tag(hash)) continue;
      const std::uint64_t off = offset_of(w);
      if (!fits(off, kBlockHeader))
        return corrupt(op, fmt::format("a table word ({:#x}) points outside it", w));
      Block* b = block(off);
      const std::uint32_t kl = b->key_len.load(std::memory_order_relaxed);
      if (!entry_fits(off, kl, b->value_len.load(std::memory_order_relaxed),
                      b->cls.load(std::memory_order_relaxed)))
        return corrupt(op, fmt::format("an entry at {} does not fit its block", off));
      if (kl == key.size() && std::memcmp(payload(off), key.data(), kl) == 0) return Place{i, w};
    }
    return corrupt(op, "its table has no empty slot");
  }

  // Makes the segment at least `end` bytes (growing by doubling).
  Result<void> grow_to(std::uint64_t end, const detail::Op& op) {
    const std::uint64_t now = h->bytes.load(std::memory_order_relaxed);
    if (end <= now) return {};
    if (h->fixed != 0)
      return fail(ENOSPC, fmt::format("{} {}: it is full (fixed at {} bytes)", op, what(), now));
    if (end > reserved_bytes)
      return fail(ENOSPC, fmt::format("{} {}: it would grow past its max_bytes ({})", op, what(),
                                      reserved_bytes));
    const std::uint64_t want = std::min(reserved_bytes, std::max(end, 2 * now));
    if (auto ok = seg->file().resize(want); !ok) {
      if (want == end) return fail(ok.error(), op.str());
      if (auto again = seg->file().resize(end); !again) return fail(again.error(), op.str());
      known_file.store(end, std::memory_order_relaxed);
      h->bytes.store(end, std::memory_order_release);
      return {};
    }
    known_file.store(want, std::memory_order_relaxed);
    h->bytes.store(want, std::memory_order_release);
    return {};
  }

  // A block of 2^cls bytes for an entry (from its free list, or new).
  Result<std::uint64_t> allocate(unsigned cls, const detail::Op& op) {
    auto& head = h->free_head[cls - detail::kMinClass];
    const std::uint64_t f = head.load(std::memory_order_relaxed);
    if (f != 0) {
      if (!fits(f, std::uint64_t{1} << cls) || block(f)->cls.load(std::memory_order_relaxed) != cls)
        return corrupt(op, fmt::format("a free list points outside it ({})", f));
      head.store(block(f)->next_free.load(std::memory_order_relaxed), std::memory_order_relaxed);
      return f;
    }
    const std::uint64_t size = std::uint64_t{1} << cls;
    auto at = bump(op);
    if (!at) return std::unexpected(at.error());
    if (auto ok = grow_to(*at + size, op); !ok) return std::unexpected(ok.error());
    return new_block(*at, size, detail::kEntry, cls);
  }

  // Where the next new block goes, checked.
  Result<std::uint64_t> bump(const detail::Op& op) const {
    const std::uint64_t at = h->bump.load(std::memory_order_relaxed);
    if (!fits(at, 0)) return corrupt(op, fmt::format("its next block ({}) lies outside it", at));
    return at;
  }

  std::uint64_t new_block(std::uint64_t at, std::uint64_t size, std::uint32_t kind,
                          std::uint32_t cls) {
    Block* b = block(at);
    b->gen.store(0, std::memory_order_relaxed);
    b->kind.store(kind, std::memory_order_relaxed);
    b->cls.store(cls, std::memory_order_relaxed);
    b->bytes.store(size, std::memory_order_relaxed);
    h->bump.store(at + size, std::memory_order_relaxed);
    return at;
  }

  void free_entry(std::uint64_t off) noexcept {
    Block* b = block(off);
    b->gen.store(b->gen.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);  // before anything reuses it
    auto& head = h->free_head[b->cls.load(std::memory_order_relaxed) - detail::kMinClass];
    b->next_free.store(head.load(std::memory_order_relaxed), std::memory_order_relaxed);
    head.store(off, std::memory_order_relaxed);
  }

  // Writes a new entry (not yet published): its offset.
  Result<std::uint64_t> write_entry(std::string_view key, std::uint64_t hash,
                                    std::span<const std::byte> value, const detail::Op& op) {
    const std::uint64_t need = kBlockHeader + key.size() + value.size();
    const unsigned cls =
        std::max(detail::kMinClass, static_cast<unsigned>(std::bit_width(need - 1)));
    auto off = allocate(cls, op);
    if (!off) return std::unexpected(off.error());
    Block* b = block(*off);
    if ((b->gen.load(std::memory_order_relaxed) & 1) != 0)  // a free block is even
      b->gen.store(b->gen.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    b->kind.store(detail::kEntry, std::memory_order_relaxed);
    b->hash.store(static_cast<std::uint32_t>(hash), std::memory_order_relaxed);
    b->key_len.store(static_cast<std::uint32_t>(key.size()), std::memory_order_relaxed);
    b->value_len.store(static_cast<std::uint32_t>(value.size()), std::memory_order_relaxed);
    std::memcpy(payload(*off), key.data(), key.size());
    if (!value.empty()) std::memcpy(payload(*off) + key.size(), value.data(), value.size());
    b->gen.store(b->gen.load(std::memory_order_relaxed) + 1, std::memory_order_release);  // odd
    return *off;
  }

  // A new table of 2^lg slots holding every word of the current one.
  Result<void> rehash(unsigned lg, const detail::Op& op) {
    auto old = table(op);
    if (!old) return std::unexpected(old.error());
    for (std::uint64_t i = 0; i <= old->mask; ++i) {
      const std::uint64_t w = old->slot[i].load(std::memory_order_relaxed);
      if (w != 0 && !word_ok(w))
        return corrupt(op, fmt::format("a table word ({:#x}) points outside it", w));
    }
    const std::uint64_t bytes = kBlockHeader + 16 + (std::uint64_t{8} << lg);
    auto at0 = bump(op);
    if (!at0) return std::unexpected(at0.error());
    if (auto ok = grow_to(*at0 + bytes, op); !ok) return std::unexpected(ok.error());
    const std::uint64_t at = new_block(*at0, bytes, detail::kTable, 0);
    auto* slot =
        std::launder(reinterpret_cast<std::atomic<std::uint64_t>*>(base + at + kBlockHeader + 16));
    std::memset(static_cast<void*>(slot), 0, std::uint64_t{8} << lg);
    const std::uint64_t mask = (std::uint64_t{1} << lg) - 1;
    for (std::uint64_t i = 0; i <= old->mask; ++i) {
      const std::uint64_t w = old->slot[i].load(std::memory_order_relaxed);
      if (w == 0) continue;
      std::uint64_t j = full_hash(w) & mask;
      while (slot[j].load(std::memory_order_relaxed) != 0) j = (j + 1) & mask;
      slot[j].store(w, std::memory_order_relaxed);
    }
    h->table.store(at | lg, std::memory_order_release);
    return {};
  }

  // A word's key hash: its low 32 bits kept in the entry, its top 16 in
  // the word (enough for every position of a table up to 2^32 slots).
  std::uint64_t full_hash(std::uint64_t w) const noexcept {
    return block(offset_of(w))->hash.load(std::memory_order_relaxed) | (w & ~detail::kOffsetMask);
  }

  void seq_begin() noexcept {
    h->seq.store(h->seq.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
  }
  void seq_end() noexcept {
    h->seq.store(h->seq.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }

  // Under the lock. `only_if_absent`: leave an existing key alone.
  Result<bool> put(std::string_view key, std::span<const std::byte> value, bool only_if_absent,
                   const detail::Op& op) {
    const std::uint64_t hash = hash_key(key);
    auto t = table(op);
    if (!t) return std::unexpected(t.error());
    auto at = find(*t, key, hash, op);
    if (!at) return std::unexpected(at.error());
    if (at->word != 0 && only_if_absent) return false;
    if (at->word == 0) {
      const std::uint64_t count = h->count.load(std::memory_order_relaxed);
      if (h->fixed != 0 && count >= h->capacity)
        return fail(ENOSPC, fmt::format("{} {}: it is full ({} keys, a fixed capacity)", op, what(),
                                        count));
      if ((count + 1) * 4 > (t->mask + 1) * 3) {
        if (h->fixed != 0) return corrupt(op, "its fixed table is fuller than its capacity");
        if (auto ok = rehash(static_cast<unsigned>(std::bit_width(t->mask)) + 1, op); !ok)
          return std::unexpected(ok.error());
        t = table(op);
        if (!t) return std::unexpected(t.error());
        at = find(*t, key, hash, op);
        if (!at) return std::unexpected(at.error());
      }
    }
    auto off = write_entry(key, hash, value, op);
    if (!off) return std::unexpected(off.error());
    seq_begin();
    t->slot[at->index].store(word_for(*off, hash), std::memory_order_release);
    if (at->word != 0) {
      free_entry(offset_of(at->word));
    } else {
      h->count.store(h->count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    seq_end();
    return true;
  }

  // Under the lock: removes the word at `index`, moving later words of the
  // same run back into the gap (so no lookup needs a tombstone).
  Result<void> remove_at(const Table& t, std::uint64_t index, const detail::Op& op) {
    // Every word it may move is checked before anything changes.
    for (std::uint64_t j = index, n = 0; n <= t.mask; j = (j + 1) & t.mask, ++n) {
      const std::uint64_t w = t.slot[j].load(std::memory_order_relaxed);
      if (w == 0) break;
      if (!word_ok(w)) return corrupt(op, fmt::format("a table word ({:#x}) points outside it", w));
    }
    const std::uint64_t off = offset_of(t.slot[index].load(std::memory_order_relaxed));
    seq_begin();
    std::uint64_t gap = index;
    t.slot[gap].store(0, std::memory_order_release);
    for (std::uint64_t j = (gap + 1) & t.mask;; j = (j + 1) & t.mask) {
      const std::uint64_t w = t.slot[j].load(std::memory_order_relaxed);
      if (w == 0) break;
      const std::uint64_t home = full_hash(w) & t.mask;
      // Move w back if its home is not in (gap, j] (cyclically).
      const bool stays = gap <= j ? (gap < home && home <= j) : (gap < home || home <= j);
      if (stays) continue;
      t.slot[gap].store(w, std::memory_order_release);
      t.slot[j].store(0, std::memory_order_release);
      gap = j;
    }
    free_entry(off);
    h->count.store(h->count.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    seq_end();
    return {};
  }

  // Under the lock, for a writer: the lock, the table and where `key` is.
  struct Located {
    MutexGuard guard;
    Table table;
    Place place;
  };
  Result<Located> locate(std::string_view key, const detail::Op& op) {
    auto g = locked(op);
    if (!g) return std::unexpected(g.error());
    auto t = table(op);
    if (!t) return std::unexpected(t.error());
    auto at = find(*t, key, hash_key(key), op);
    if (!at) return std::unexpected(at.error());
    return Located{std::move(*g), *t, *at};
  }
  // The value of a word find() returned (checked there).
  std::string value_of(std::uint64_t word) const {
    const std::uint64_t off = offset_of(word);
    const Block* b = block(off);
    return {reinterpret_cast<const char*>(payload(off)) + b->key_len.load(), b->value_len.load()};
  }

  // After a writer's death, under the lock: the table's words deduplicated
  // and each made reachable from its home again, the free lists and the
  // count rebuilt from a walk of every block.
  Result<void> repair(const detail::Op& op) const {
    auto t = table(op);
    if (!t) return std::unexpected(t.error());
    // In place, and so that a death in the middle of it (the next locker
    // repairs again) loses nothing: no word is cleared unless another copy
    // of it is in the table. First the duplicates a half-done move left...
    std::unordered_set<std::uint64_t> live;
    // Odd from here on, whatever it was (a dead writer may have left it odd
    // already: adding one would make it even, and readers would trust the
    // table while it is being put right).
    h->seq.store(h->seq.load(std::memory_order_relaxed) | 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    std::uint64_t count = 0;
    for (std::uint64_t i = 0; i <= t->mask; ++i) {
      const std::uint64_t w = t->slot[i].load(std::memory_order_relaxed);
      if (w == 0) continue;
      const std::uint64_t off = offset_of(w);
      if (!word_ok(w)) return corrupt(op, fmt::format("a table word ({:#x}) points outside it", w));
      if (live.insert(off).second) {
        ++count;
      } else {
        t->slot[i].store(0, std::memory_order_release);
      }
    }
    // ...then every word that an empty slot cuts off from its home is put
    // in the first empty slot after its home (stored there before it is
    // cleared where it was), until none is cut off.
    for (bool moved = true; moved;) {
      moved = false;
      for (std::uint64_t i = 0; i <= t->mask; ++i) {
        const std::uint64_t w = t->slot[i].load(std::memory_order_relaxed);
        if (w == 0) continue;
        std::uint64_t e = full_hash(w) & t->mask;
        while (e != i && t->slot[e].load(std::memory_order_relaxed) != 0) e = (e + 1) & t->mask;
        if (e == i) continue;  // reachable
        t->slot[e].store(w, std::memory_order_release);
        t->slot[i].store(0, std::memory_order_release);
        moved = true;
      }
    }
    for (auto& head : h->free_head) head.store(0, std::memory_order_relaxed);
    const std::uint64_t end = h->bump.load(std::memory_order_relaxed);
    if (!fits(end, 0)) return corrupt(op, "its blocks run past its end");
    for (std::uint64_t at = detail::kArena; at < end;) {
      Block* b = block(at);
      const std::uint64_t bytes = b->bytes.load(std::memory_order_relaxed);
      if (bytes < 64 || bytes % 64 != 0 || bytes > end - at)
        return corrupt(op, fmt::format("a block at {} has a size of {}", at, bytes));
      if (b->kind.load(std::memory_order_relaxed) == detail::kEntry && !live.contains(at)) {
        const std::uint32_t cls = b->cls.load(std::memory_order_relaxed);
        if (cls < detail::kMinClass || cls > detail::kMaxClass ||
            (std::uint64_t{1} << cls) != bytes)
          return corrupt(op, fmt::format("a block at {} has class {}", at, cls));
        if ((b->gen.load(std::memory_order_relaxed) & 1) != 0)
          b->gen.store(b->gen.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        auto& head = h->free_head[cls - detail::kMinClass];
        b->next_free.store(head.load(std::memory_order_relaxed), std::memory_order_relaxed);
        head.store(at, std::memory_order_relaxed);
      }
      at += bytes;
    }
    h->count.store(count, std::memory_order_relaxed);
    // Whatever seq was (odd, if it died mid-change): even again, and new.
    h->seq.store((h->seq.load(std::memory_order_relaxed) | 1) + 1, std::memory_order_release);
    return {};
  }
};

// ---------------------------------------------------------------- making and opening

namespace {

Result<Dict> made(std::shared_ptr<detail::Segment> seg) {
  auto impl = std::make_unique<Dict::Impl>();
  impl->h = std::launder(reinterpret_cast<DictHeader*>(seg->data()));
  impl->base = seg->data();
  impl->reserved_bytes = seg->map.size();
  if (auto size = seg->file().size()) impl->known_file.store(*size);
  impl->seg = std::move(seg);
  return Dict(std::move(impl));
}

Result<Dict> make(const std::string& name, const DictOptions& o) {
  const std::string op =
      name.empty() ? std::string("make an anonymous dict") : "create dict " + name;
  if (o.capacity == 0 || o.capacity > (std::size_t{1} << 32))
    return fail(EINVAL, fmt::format("{}: a capacity of {} is not 1 to 2^32", op, o.capacity));
  if (o.max_entry == 0 || o.max_entry > (std::size_t{1} << 30))
    return fail(EINVAL, fmt::format("{}: max_entry {} is not 1 to 1 GiB", op, o.max_entry));
  const unsigned lg = std::max(3u, static_cast<unsigned>(std::bit_width((o.capacity * 4 + 2) / 3)));
  const std::uint64_t table = round_up(kBlockHeader + 16 + (std::uint64_t{8} << lg), 64);
  const std::uint64_t entry =
      std::bit_ceil(kBlockHeader + std::max<std::size_t>(o.typical_entry, 1));
  // One block more than the capacity: a replace writes the new entry
  // before it frees the old one, which a full fixed dict must also do.
  const std::uint64_t size = detail::kArena + table + (o.capacity + 1) * entry;
  if (size > o.max_bytes)
    return fail(EINVAL, fmt::format("{}: {} entries of about {} bytes take {} bytes, past "
                                    "max_bytes {}",
                                    op, o.capacity, o.typical_entry, size, o.max_bytes));
  auto seg = detail::create_segment(detail::kDictKind, name, size, o.fixed ? size : o.max_bytes,
                                    sizeof(DictHeader), o.mode);
  if (!seg) return std::unexpected(seg.error());
  auto* h = ::new (static_cast<void*>((*seg)->data())) DictHeader();
  std::uint64_t seed = 0;
  if (::getrandom(&seed, sizeof seed, 0) != static_cast<ssize_t>(sizeof seed))
    seed = static_cast<std::uint64_t>(::getpid()) * 0x9e3779b97f4a7c15ULL;
  h->seed = seed;
  h->max_entry = o.max_entry;
  h->capacity = o.capacity;
  h->fixed = o.fixed ? 1 : 0;
  h->bytes.store(size, std::memory_order_relaxed);
  auto* b = std::launder(reinterpret_cast<Block*>((*seg)->data() + detail::kArena));
  b->kind.store(detail::kTable, std::memory_order_relaxed);
  b->bytes.store(table, std::memory_order_relaxed);
  h->table.store(detail::kArena | lg, std::memory_order_relaxed);
  h->bump.store(detail::kArena + table, std::memory_order_relaxed);
  h->prefix.magic = detail::kDictKind.magic;
  h->prefix.version = detail::kDictKind.version;
  h->prefix.header_bytes = sizeof(DictHeader);
  h->prefix.map_bytes = (*seg)->map.size();
  (*seg)->publish();
  return made(std::move(*seg));
}

Result<Dict> join(Result<std::shared_ptr<detail::Segment>> seg) {
  if (!seg) return std::unexpected(seg.error());
  const auto* h = std::launder(reinterpret_cast<const DictHeader*>((*seg)->data()));
  auto bad = [&](std::string why) {
    return fail(errc::bad_record, fmt::format("open {}: {}", (*seg)->what, why));
  };
  const std::uint64_t bytes = h->bytes.load(std::memory_order_acquire);
  auto size = (*seg)->file().size();
  if (!size) return std::unexpected(size.error());
  if (bytes < detail::kArena || bytes > *size || bytes > (*seg)->map.size())
    return bad(fmt::format("it says it holds {} bytes, but its file has {}", bytes, *size));
  if (h->fixed > 1 || h->max_entry == 0 || h->max_entry > (std::uint64_t{1} << 30) ||
      h->capacity == 0)
    return bad("its options are corrupt");
  // Every other field is checked where it is used (table(), entry_fits()).
  return made(std::move(*seg));
}

}  // namespace

Dict::Dict() noexcept = default;
Dict::Dict(std::unique_ptr<Impl> p) noexcept : p_(std::move(p)) {}
Dict::Dict(Dict&&) noexcept = default;
Dict& Dict::operator=(Dict&&) noexcept = default;
Dict::~Dict() = default;

Result<Dict> Dict::create(const std::string& name, DictOptions options) {
  if (name.empty()) return fail(EINVAL, "create dict: the name is empty");
  return make(name, options);
}

Result<Dict> Dict::open(const std::string& name, Deadline ready) {
  return join(detail::open_segment(detail::kDictKind, name, sizeof(DictHeader), ready));
}

Result<Dict> Dict::anonymous(DictOptions options) {
  return make("", options);
}

Result<Dict> Dict::adopt(Fd memory) {
  return join(detail::adopt_segment(detail::kDictKind, std::move(memory), sizeof(DictHeader)));
}

int Dict::memory_fd() const noexcept {
  return p_ ? p_->seg->fd() : -1;
}

const std::string& Dict::description() const noexcept {
  static const std::string none = "no dict";
  return p_ ? p_->what() : none;
}

// ---------------------------------------------------------------- reads

namespace {
std::unexpected<Error> no_dict(const char* op) {
  return fail(EINVAL, fmt::format("{} a dict: none held (moved from or default)", op));
}
std::string quoted(std::string_view key) {
  if (key.size() > 64) return fmt::format("\"{}…\"", key.substr(0, 64));
  return fmt::format("\"{}\"", key);
}
}  // namespace

Result<void> Dict::get_into(std::string_view key, std::string& into) const {
  if (!p_) return no_dict("get from");
  const detail::Op op{"get", key, "from"};
  auto found = p_->read(key, op, [&](std::span<const std::byte> v) {
    into.assign(reinterpret_cast<const char*>(v.data()), v.size());
  });
  if (!found) return std::unexpected(found.error());
  if (!*found) return fail(errc::no_such_key, fmt::format("{} {}", op, p_->what()));
  return {};
}

Result<std::string> Dict::get(std::string_view key) const {
  std::string v;
  if (auto ok = get_into(key, v); !ok) return std::unexpected(ok.error());
  return v;
}

Result<void> Dict::get_exactly(std::string_view key, std::span<std::byte> into) const {
  if (!p_) return no_dict("get from");
  const detail::Op op{"get", key, "from"};
  std::size_t size = 0;
  auto found = p_->read(key, op, [&](std::span<const std::byte> v) {
    size = v.size();
    if (v.size() == into.size()) std::memcpy(into.data(), v.data(), v.size());
  });
  if (!found) return std::unexpected(found.error());
  if (!*found) return fail(errc::no_such_key, fmt::format("{} {}", op, p_->what()));
  if (size != into.size())
    return fail(EBADMSG, fmt::format("{} {}: its value has {} bytes, not {}", op, p_->what(), size,
                                     into.size()));
  return {};
}

std::string Dict::value_size_error(std::string_view key, std::size_t want) const {
  return fmt::format("update {} in {}: its value is not {} bytes", quoted(key), description(),
                     want);
}

Result<bool> Dict::contains(std::string_view key) const {
  if (!p_) return no_dict("look in");
  return p_->read(key, detail::Op{"look for", key, "in"}, [](std::span<const std::byte>) {});
}

std::size_t Dict::size() const noexcept {
  return p_ ? p_->h->count.load(std::memory_order_relaxed) : 0;
}

Result<std::vector<std::pair<std::string, std::string>>> Dict::items() const {
  if (!p_) return no_dict("list");
  using Items = std::vector<std::pair<std::string, std::string>>;
  const detail::Op op{"list"};
  auto* h = p_->h;
  // One pass: every entry copied and checked; nothing changed meanwhile.
  auto pass = [&](Items& out) -> Result<bool> {
    out.clear();
    const std::uint64_t s1 = h->seq.load(std::memory_order_acquire);
    if ((s1 & 1) != 0) return false;
    auto t = p_->table(op);
    if (!t) return std::unexpected(t.error());
    for (std::uint64_t i = 0; i <= t->mask; ++i) {
      const std::uint64_t w = t->slot[i].load(std::memory_order_acquire);
      if (w == 0) continue;
      const std::uint64_t off = Impl::offset_of(w);
      if (!p_->fits(off, kBlockHeader))
        return p_->corrupt(op, fmt::format("a table word ({:#x}) points outside it", w));
      Block* b = p_->block(off);
      const std::uint32_t g1 = b->gen.load(std::memory_order_acquire);
      if ((g1 & 1) == 0) return false;
      const std::uint32_t kl = b->key_len.load(std::memory_order_relaxed);
      const std::uint32_t vl = b->value_len.load(std::memory_order_relaxed);
      const bool fits = p_->entry_fits(off, kl, vl, b->cls.load(std::memory_order_relaxed));
      if (fits) {
        const char* at = reinterpret_cast<const char*>(p_->payload(off));
        out.emplace_back(std::string(at, kl), std::string(at + kl, vl));
      }
      std::atomic_thread_fence(std::memory_order_acquire);
      if (b->gen.load(std::memory_order_relaxed) != g1) return false;
      if (!fits) return p_->corrupt(op, fmt::format("an entry at {} does not fit its block", off));
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    return h->seq.load(std::memory_order_relaxed) == s1 &&
           h->table.load(std::memory_order_relaxed) == t->word;
  };
  Items out;
  for (int i = 0; i < 8; ++i) {
    auto ok = pass(out);
    if (!ok) return std::unexpected(ok.error());
    if (*ok) return out;
    p_->read_retries.fetch_add(1, std::memory_order_relaxed);
  }
  auto g = p_->locked(op);  // writers wait for the copy; readers do not
  if (!g) return std::unexpected(g.error());
  auto ok = pass(out);
  if (!ok) return std::unexpected(ok.error());
  if (!*ok) return p_->corrupt(op, "it changed under the lock");
  return out;
}

Result<std::vector<std::string>> Dict::keys() const {
  auto all = items();
  if (!all) return std::unexpected(all.error());
  std::vector<std::string> out;
  out.reserve(all->size());
  for (auto& [k, v] : *all) out.push_back(std::move(k));
  return out;
}

DictStats Dict::stats() const noexcept {
  DictStats s;
  if (!p_) return s;
  s.size = size();
  s.table_slots = (std::size_t{1} << (p_->h->table.load(std::memory_order_relaxed) & 63));
  s.bytes = p_->h->bytes.load(std::memory_order_relaxed);
  s.repairs = p_->h->repairs.load(std::memory_order_relaxed);
  s.read_retries = p_->read_retries.load(std::memory_order_relaxed);
  return s;
}

// ---------------------------------------------------------------- writes

namespace {
Result<void> check_entry(const Dict::Impl& d, std::string_view key, std::size_t value,
                         const detail::Op& op) {
  if (key.size() + value > d.h->max_entry)
    return fail(EMSGSIZE, fmt::format("{} {}: a key and value of {} bytes, past its max_entry {}",
                                      op, d.what(), key.size() + value, d.h->max_entry));
  return {};
}
}  // namespace

Result<void> Dict::set(std::string_view key, std::span<const std::byte> value) {
  if (!p_) return no_dict("set in");
  const detail::Op op{"set", key, "in"};
  if (auto ok = check_entry(*p_, key, value.size(), op); !ok) return ok;
  auto g = p_->locked(op);
  if (!g) return std::unexpected(g.error());
  auto ok = p_->put(key, value, false, op);
  if (!ok) return std::unexpected(ok.error());
  return {};
}

Result<bool> Dict::set_if_absent(std::string_view key, std::span<const std::byte> value) {
  if (!p_) return no_dict("set in");
  const detail::Op op{"set", key, "in"};
  if (auto ok = check_entry(*p_, key, value.size(), op); !ok) return std::unexpected(ok.error());
  auto g = p_->locked(op);
  if (!g) return std::unexpected(g.error());
  return p_->put(key, value, true, op);
}

Result<bool> Dict::erase(std::string_view key) {
  if (!p_) return no_dict("erase from");
  const detail::Op op{"erase", key, "from"};
  auto at = p_->locate(key, op);
  if (!at) return std::unexpected(at.error());
  if (at->place.word == 0) return false;
  if (auto ok = p_->remove_at(at->table, at->place.index, op); !ok)
    return std::unexpected(ok.error());
  return true;
}

Result<std::string> Dict::pop(std::string_view key) {
  if (!p_) return no_dict("pop from");
  const detail::Op op{"pop", key, "from"};
  auto at = p_->locate(key, op);
  if (!at) return std::unexpected(at.error());
  if (at->place.word == 0) return fail(errc::no_such_key, fmt::format("{} {}", op, p_->what()));
  std::string out = p_->value_of(at->place.word);
  if (auto ok = p_->remove_at(at->table, at->place.index, op); !ok)
    return std::unexpected(ok.error());
  return out;
}

Result<void> Dict::clear() {
  if (!p_) return no_dict("clear");
  const detail::Op op{"clear"};
  auto g = p_->locked(op);
  if (!g) return std::unexpected(g.error());
  auto t = p_->table(op);
  if (!t) return std::unexpected(t.error());
  p_->seq_begin();
  for (std::uint64_t i = 0; i <= t->mask; ++i) {
    const std::uint64_t w = t->slot[i].load(std::memory_order_relaxed);
    if (w == 0) continue;
    t->slot[i].store(0, std::memory_order_release);
    if (p_->word_ok(w)) p_->free_entry(Impl::offset_of(w));  // a corrupt one is only dropped
  }
  p_->h->count.store(0, std::memory_order_relaxed);
  p_->seq_end();
  return {};
}

Result<void> Dict::update(std::string_view key,
                          const std::function<void(std::string& value, bool present)>& change) {
  return update_if(key, [&](std::string& value, bool present) {
    change(value, present);
    return true;
  });
}

Result<void> Dict::update_if(std::string_view key,
                             const std::function<bool(std::string& value, bool present)>& change) {
  if (!p_) return no_dict("update in");
  const detail::Op op{"update", key, "in"};
  auto at = p_->locate(key, op);
  if (!at) return std::unexpected(at.error());
  const bool present = at->place.word != 0;
  std::string value = present ? p_->value_of(at->place.word) : std::string();
  if (!change(value, present)) return {};  // nothing to write
  if (auto ok = check_entry(*p_, key, value.size(), op); !ok) return ok;
  auto ok = p_->put(key, std::as_bytes(std::span(value)), false, op);
  if (!ok) return std::unexpected(ok.error());
  return {};
}

}  // namespace tether
