// The shared-memory queue (tether/queue.hpp).
//
// The ring holds records, each aligned to 64 bytes: a 16-byte header (a tag,
// the record's span in bytes, the payload's length) and the payload. Three
// positions, in bytes since the queue was made (they never wrap):
//   W  the next record a producer claims        (h->W, producers' line)
//   R  the next record a consumer takes         (h->R, consumers' line)
//   F  everything before F is free for writing  (h->F)
// F <= R <= W <= F + ring. A record's tag holds its own position (so a stale
// header from an earlier lap, or payload bytes, never pass for the record
// consumers look for), its owner (a participant's slot) and its state:
//   Writing -> Committed -> Held -> Released                 (a view)
//   Writing -> Committed -> (copied) -> Released, or F moves past it
//   Pad (the end of the ring skipped), Abandoned (a dead writer's) -> Released
//   Committed | Reading (a dead reader's) -> Returned -> Reading | Held
// A copying get does not mark the record it takes: it moves R past it, and
// once the copy is done moves F past it too if it is the first record not
// free (the usual case: the line the producer wrote is only read), or
// marks it Released for whoever moves F. Its slot's read_pos says which
// record it is copying, so that its death gives that one back (Returned).
// A claim writes the claimed record's header and an Empty tag for the
// position after it before it moves W, so the header consumers read next
// is always one made for exactly that position. A record never wraps: when
// one does not fit before the end of the ring, a Pad fills the end.
//
// Producers claim under h->plock and consumers under h->clock (robust
// mutexes), unless the queue has one of them (Ends::one), which needs no
// lock. The copy itself is done outside any lock. Each participant writes
// the claim it is making into its slot first, so that whoever finds it dead
// (its lock's owner_died, or its lease's) can finish the claim
// (repair_write, repair_read) and then undo what it held (recover_slot).
#include "tether/queue/queue.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <mutex>

#include <fmt/format.h>

#include "../sync/futex.hpp"
#include "segment.hpp"

namespace tether {

namespace detail {

namespace {

constexpr std::uint64_t kMagic = 0x5551524548544554;  // "TETHERQU"
constexpr std::uint32_t kVersion = 3;
constexpr SegmentKind kQueueKind{kMagic, kVersion, "queue"};
constexpr unsigned kSlots = 64;
constexpr std::uint64_t kAlign = 64;
constexpr std::uint64_t kRecordHeader = 16;
constexpr std::uint64_t kMinRing = 4096;
constexpr std::uint32_t kPutter = 0x100, kGetter = 0x200;
// In a slot's flags: its descriptor is armed, to be told when a get (a
// put) may succeed.
constexpr std::uint32_t kPollGet = 0x400, kPollPut = 0x800;

enum State : std::uint32_t {
  kEmpty = 0,
  kWriting = 1,
  kCommitted = 2,
  kPad = 3,
  kAbandoned = 4,
  kReading = 5,
  kHeld = 6,
  kReleased = 7,
  kReturned = 8,  // a dead reader's, to be taken again before anything else
};

constexpr std::uint64_t kPosMask = (std::uint64_t{1} << 52) - 1;

constexpr std::uint64_t make_tag(std::uint64_t pos, unsigned owner, State s) noexcept {
  return (((pos / kAlign) & kPosMask) << 12) | (std::uint64_t{owner & 0xff} << 4) | s;
}
constexpr bool tag_at(std::uint64_t tag, std::uint64_t pos) noexcept {
  return (tag >> 12) == ((pos / kAlign) & kPosMask);
}
constexpr State tag_state(std::uint64_t tag) noexcept {
  return static_cast<State>(tag & 0xf);
}
constexpr unsigned tag_owner(std::uint64_t tag) noexcept {
  return static_cast<unsigned>((tag >> 4) & 0xff);
}

constexpr std::uint64_t round_up(std::uint64_t n, std::uint64_t to) noexcept {
  return (n + to - 1) / to * to;
}

}  // namespace

struct Record {
  std::atomic<std::uint64_t> tag;
  std::atomic<std::uint32_t> span;  // bytes of the record, header included
  std::atomic<std::uint32_t> len;   // bytes of payload
};
static_assert(sizeof(Record) == kRecordHeader);

struct alignas(128) QueueSlot {
  Mutex lease;
  std::atomic<std::uint32_t> pid{0};
  // 1: counted in readers_sleeping; 2: in writers_sleeping; kPutter,
  // kGetter: it has put / got (a side whose last one's death closes a
  // close_on_death queue).
  std::atomic<std::uint32_t> sleeping{0};
  // 1 while another participant cleans up after this slot's dead holder
  // (its lease then looks held).
  std::atomic<std::uint32_t> recovering{0};
  // Tasks (task_done/join): messages this participant got, and task_done
  // calls it made (both wrap; only their difference counts).
  std::atomic<std::uint32_t> tasks_taken{0};
  std::atomic<std::uint32_t> tasks_done{0};
  // The write claim being made (see repair_write).
  std::atomic<std::uint64_t> claim_pos{~std::uint64_t{0}};
  std::atomic<std::uint64_t> claim_total{0};
  std::atomic<std::uint64_t> claim_need{0};
  std::atomic<std::uint64_t> claim_puts{0};
  // The read claim being made (see repair_read).
  std::atomic<std::uint64_t> read_pos{~std::uint64_t{0}};
  std::atomic<std::uint64_t> read_gets{0};
};

static_assert(sizeof(QueueSlot) == 128);

struct QueueHeader {
  // Written once by the creator, before prefix.ready.
  SegmentPrefix prefix;
  std::uint64_t ring_offset = 0;
  std::uint64_t ring_bytes = 0;
  std::uint64_t max_message = 0;
  std::uint64_t capacity_messages = 0;
  std::uint64_t total_bytes = 0;
  std::uint64_t id = 0;  // random: names the participants' descriptors
  std::uint32_t one_producer = 0;
  std::uint32_t one_consumer = 0;
  std::uint32_t slots = 0;
  std::uint32_t close_on_death = 0;

  alignas(64) std::atomic<std::uint32_t> closed{0};
  std::atomic<std::uint32_t> returned{0};       // non-zero: Returned records below R, to take first
  std::atomic<std::uint32_t> producer_role{0};  // slot + 1 (Ends::one)
  std::atomic<std::uint32_t> consumer_role{0};
  std::atomic<std::uint64_t> abandoned{0};
  std::atomic<std::uint64_t> cancelled{0};  // loans cancelled (or dropped uncommitted)
  std::atomic<std::uint64_t> redelivered{0};
  std::atomic<std::uint64_t> reclaimed{0};
  std::atomic<std::uint64_t> dead{0};

  alignas(64) Mutex plock;
  std::atomic<std::uint64_t> W{0};
  std::atomic<std::uint64_t> puts{0};

  alignas(64) Mutex clock;
  std::atomic<std::uint64_t> R{0};
  std::atomic<std::uint64_t> gets{0};

  alignas(64) std::atomic<std::uint64_t> F{0};

  // task_done() calls, plus what dead consumers got and never finished.
  alignas(64) std::atomic<std::uint64_t> tasks_done{0};
  std::atomic<std::uint64_t> tasks_dropped{0};  // of those: the dead's
  std::atomic<std::uint32_t> joiners_sleeping{0};
  std::atomic<std::uint32_t> join_event{0};

  alignas(64) std::atomic<std::uint32_t> readers_sleeping{0};
  std::atomic<std::uint32_t> read_event{0};
  std::atomic<std::uint32_t> readers_polling{0};  // slots with kPollGet
  alignas(64) std::atomic<std::uint32_t> writers_sleeping{0};
  std::atomic<std::uint32_t> write_event{0};
  std::atomic<std::uint32_t> writers_polling{0};  // slots with kPollPut

  alignas(128) QueueSlot slot[kSlots];
};

constexpr std::uint64_t kRingOffset = round_up(sizeof(QueueHeader), 4096);

namespace {

bool lease_dead(Mutex& lease) noexcept {
  std::uint32_t w = lock_word(lease).load(std::memory_order_acquire);
  return w == 0 || (w & FUTEX_OWNER_DIED) != 0;
}

void wake_all(std::atomic<std::uint32_t>& event) noexcept {
  event.fetch_add(1, std::memory_order_release);
  futex_wake(event, INT_MAX);
}

std::unexpected<Error> would_block_error(std::string what) {
  return fail(EAGAIN, std::move(what));
}

std::unexpected<Error> timed_out(std::string what) {
  return fail(ETIMEDOUT, std::move(what));
}

}  // namespace
}  // namespace detail

using detail::kAlign;
using detail::kRecordHeader;
using detail::lease_dead;
using detail::make_tag;
using detail::QueueHeader;
using detail::Record;
using detail::round_up;
using detail::tag_at;
using detail::tag_owner;
using detail::tag_state;
using detail::would_block_error;

struct Queue::Impl {
  std::shared_ptr<detail::Segment> sh;
  QueueHeader* h = nullptr;
  std::byte* ring = nullptr;
  std::uint64_t cap = 0, mask = 0, max_message = 0, capacity_messages = 0;
  bool one_producer = false, one_consumer = false;
  bool close_on_death = false;
  std::uint32_t side_bits = 0;  // kPutter / kGetter once said (close_on_death)
  int watch = -1;               // a participant of the other side (close_on_death)
  unsigned spin = 512;
  int slot = -1;
  std::uint32_t generation = 0;
  pthread_t thread{};
  bool producer = false, consumer = false;  // role taken (Ends::one)
  std::uint64_t cached_free = 0, cached_gets = 0;
  int blocker = -1;  // the slot an attempt found in its way

  ~Impl() { leave(); }

  Record& at(std::uint64_t pos) const noexcept {
    return *std::launder(reinterpret_cast<Record*>(ring + (pos & mask)));
  }
  std::byte* payload(std::uint64_t pos) const noexcept {
    return ring + (pos & mask) + kRecordHeader;
  }
  const std::string& what() const noexcept { return sh->what; }
  detail::QueueSlot& me() const noexcept { return h->slot[slot]; }

  // Why the last attempt would block. An attempt that would block returns
  // an error without a message (no formatting, no allocation: a waiter
  // spinning on the queue makes one attempt after another, and the sooner
  // each ends the sooner the message it waits for is seen); the message is
  // written only when the error reaches the caller (described()).
  enum class Block : unsigned char { empty, being_written, full, at_capacity };
  Block block_why = Block::empty;
  std::unexpected<Error> blocked(Block why) noexcept {
    block_why = why;
    return std::unexpected(Error(std::error_code(EAGAIN, std::system_category()), std::string()));
  }
  template <class R>
  R described(R r) const {
    if (r || !would_block(r.error()) || !r.error().context().empty()) return r;
    switch (block_why) {
      case Block::empty:
        return would_block_error(fmt::format("get from {}: it is empty", what()));
      case Block::being_written:
        return would_block_error(fmt::format("get from {}: a message is being written", what()));
      case Block::full:
        return would_block_error(fmt::format("put on {}: it is full", what()));
      case Block::at_capacity:
        return would_block_error(fmt::format("put on {}: it holds {} messages, its capacity",
                                             what(), capacity_messages));
    }
    return r;
  }

  // A span read from the ring, checked before it is trusted.
  bool good_span(std::uint64_t pos, std::uint64_t span) const noexcept {
    return span >= kAlign && span % kAlign == 0 && (pos & mask) + span <= cap;
  }
  std::unexpected<Error> corrupt(std::uint64_t pos, std::string_view op) const {
    return fail(errc::bad_record,
                fmt::format("{} {}: corrupt record at position {}", op, what(), pos));
  }

  // ------------------------------------------------------------ participants

  Result<void> enter() {
    if (generation == detail::g_fork_generation.load(std::memory_order_relaxed) && slot >= 0)
        [[likely]] {
      if (::pthread_equal(thread, ::pthread_self()) != 0) [[likely]]
        return {};
      return fail(EPERM, fmt::format("use {}: this participant belongs to another thread "
                                     "(make one per thread with Queue::another())",
                                     what()));
    }
    // New, or inherited across fork: the parent's lease is not ours.
    slot = -1;
    producer = consumer = false;
    side_bits = 0;
    watch = -1;
    generation = detail::fork_generation();
    thread = ::pthread_self();
    return join();
  }

  Result<void> join() {
    if (!h->slot[0].lease.same_pid_namespace())
      return fail(errc::foreign_pid_namespace, "join " + what());
    for (unsigned i = 0; i < detail::kSlots; ++i) {
      auto& s = h->slot[i];
      int r = ::pthread_mutex_trylock(s.lease.native());
      if (r != 0 && r != EOWNERDEAD) continue;
      if (r == EOWNERDEAD) {
        s.recovering.store(1);
        recover_slot(i);
        s.recovering.store(0);
        ::pthread_mutex_consistent(s.lease.native());
      }
      s.claim_pos.store(~std::uint64_t{0}, std::memory_order_relaxed);
      s.read_pos.store(~std::uint64_t{0}, std::memory_order_relaxed);
      s.sleeping.store(0, std::memory_order_relaxed);
      if (r != EOWNERDEAD) drop_tasks(s);  // a participant that left with some open
      s.pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_relaxed);
      slot = static_cast<int>(i);
      return {};
    }
    return fail(EBUSY, fmt::format("join {}: all {} participants' places are taken", what(),
                                   detail::kSlots));
  }

  void leave() noexcept {
    if (h == nullptr || slot < 0) return;
    if (generation != detail::g_fork_generation.load(std::memory_order_relaxed)) return;
    if (::pthread_equal(thread, ::pthread_self()) == 0) return;  // its thread's death frees it
    auto me1 = static_cast<std::uint32_t>(slot + 1);
    std::uint32_t expect = me1;
    h->producer_role.compare_exchange_strong(expect, 0);
    expect = me1;
    h->consumer_role.compare_exchange_strong(expect, 0);
    drop_tasks(me());  // what it got and never said done: nobody will
    ::pthread_mutex_unlock(me().lease.native());
    slot = -1;
  }

  // Takes the one producer's or consumer's role (Ends::one).
  Result<void> take_role(std::atomic<std::uint32_t>& role, bool& have, const char* name) {
    if (have) [[likely]]
      return {};
    auto me1 = static_cast<std::uint32_t>(slot + 1);
    for (int tries = 0; tries < 2000; ++tries) {
      std::uint32_t cur = role.load(std::memory_order_acquire);
      if (cur == me1 || (cur == 0 && role.compare_exchange_strong(cur, me1))) {
        have = true;
        return {};
      }
      if (cur == 0) continue;
      if (cur > detail::kSlots) return corrupt(0, "take a role in");
      if (!lease_dead(h->slot[cur - 1].lease) && h->slot[cur - 1].recovering.load() == 0)
        return fail(EBUSY, fmt::format("{} {}: it has one already (Ends::one)", name, what()));
      try_recover(cur - 1);
      if (role.load() == cur) ::usleep(500);  // another participant is cleaning it up
    }
    return fail(EBUSY, fmt::format("{} {}: its dead {} is not cleaned up", name, what(), name));
  }

  // ------------------------------------------------------------ recovery

  // Cleans up after slot `s` if nobody lives in it (its holder died, or it
  // is free while records still name it: a participant that left with a
  // loan open); true if its holder had died.
  bool try_recover(unsigned s) {
    if (s >= detail::kSlots || static_cast<int>(s) == slot) return false;
    auto& lease = h->slot[s].lease;
    int r = ::pthread_mutex_trylock(lease.native());
    if (r != 0 && r != EOWNERDEAD) return false;
    h->slot[s].recovering.store(1);
    recover_slot(s, r == EOWNERDEAD);
    h->slot[s].recovering.store(0);
    if (r == EOWNERDEAD) ::pthread_mutex_consistent(lease.native());
    ::pthread_mutex_unlock(lease.native());
    return r == EOWNERDEAD;
  }

  // A producer died in the middle of a claim, holding plock: which one is
  // not known (it may have died before it could say), but only the holder
  // writes a claim, so the one whose claim starts at W is it.
  void repair_writes() {
    const std::uint64_t w = h->W.load(std::memory_order_acquire);
    for (unsigned s = 0; s < detail::kSlots; ++s)
      if (h->slot[s].claim_pos.load(std::memory_order_acquire) == w) repair_write(s);
  }
  void repair_reads() {
    const std::uint64_t r = h->R.load(std::memory_order_acquire);
    for (unsigned s = 0; s < detail::kSlots; ++s)
      if (h->slot[s].read_pos.load(std::memory_order_acquire) == r) repair_read(s);
  }

  // The producers' (or consumers') claim lock, with the claim its last
  // holder was making finished if that holder died.
  Result<MutexGuard> lock_claims(bool producers) {
    auto g = (producers ? h->plock : h->clock).lock();
    if (g && g->owner_died()) [[unlikely]] {
      if (producers)
        repair_writes();
      else
        repair_reads();
      (void)g->mark_consistent();
    }
    return g;
  }

  // Producer `s` died in the middle of a claim (holding plock, or the one
  // producer): finish it, as a record nobody will read.
  void repair_write(unsigned s) {
    if (s >= detail::kSlots) return;
    auto& sl = h->slot[s];
    std::uint64_t w = h->W.load(std::memory_order_acquire);
    if (sl.claim_pos.load(std::memory_order_acquire) != w) return;
    std::uint64_t total = sl.claim_total.load(), need = sl.claim_need.load();
    if (total < need || total > cap || !good_span(w + (total - need), need)) return;
    write_headers(w, total - need, need, 0, s, detail::kAbandoned);
    h->puts.store(sl.claim_puts.load(), std::memory_order_relaxed);
    h->W.store(w + total, std::memory_order_release);
    h->abandoned.fetch_add(1, std::memory_order_relaxed);
  }

  // A consumer died in the middle of taking a record (holding clock, or
  // the one consumer): finish taking it; recover_slot then gives it back.
  void repair_read(unsigned s) {
    if (s >= detail::kSlots) return;
    auto& sl = h->slot[s];
    std::uint64_t r = h->R.load(std::memory_order_acquire);
    if (sl.read_pos.load(std::memory_order_acquire) != r) return;
    Record& rec = at(r);
    std::uint64_t tag = rec.tag.load(std::memory_order_acquire);
    std::uint64_t span = rec.span.load(std::memory_order_relaxed);
    if (!tag_at(tag, r) || !good_span(r, span)) return;
    auto st = tag_state(tag);
    if (st == detail::kCommitted) {
      // Not taken: R never moved past it, so it stays for the next get; a
      // copying get may have counted it already.
      h->gets.store(sl.read_gets.load() - 1, std::memory_order_relaxed);
      return;
    }
    if (st != detail::kReading && st != detail::kHeld && st != detail::kReleased) return;
    h->gets.store(sl.read_gets.load(), std::memory_order_relaxed);
    h->R.store(r + span, std::memory_order_release);
  }

  // A message dead reader `s` had taken and not finished: Returned, for the
  // next get to take first.
  void give_back(Record& rec, std::uint64_t tag, std::uint64_t p, unsigned s) {
    if (rec.tag.compare_exchange_strong(tag, make_tag(p, s, detail::kReturned))) {
      h->redelivered.fetch_add(1, std::memory_order_relaxed);
      h->returned.fetch_add(1, std::memory_order_release);
    }
  }

  // Undoes what dead slot `s` left (its lease held by this thread).
  void recover_slot(unsigned s, bool died = true) {
    if (died) h->dead.fetch_add(1, std::memory_order_relaxed);
    std::optional<MutexGuard> pg, cg;
    if (!one_producer) {
      if (auto g = lock_claims(true)) pg.emplace(std::move(*g));
    } else if (h->producer_role.load() == s + 1) {
      repair_write(s);
    }
    if (!one_consumer) {
      if (auto g = lock_claims(false)) cg.emplace(std::move(*g));
    } else if (h->consumer_role.load() == s + 1) {
      repair_read(s);
    }
    // Every record it owns, from F to W.
    std::uint64_t p = h->F.load(std::memory_order_acquire);
    const std::uint64_t end = h->W.load(std::memory_order_acquire);
    for (std::uint64_t n = 0; p < end && n <= cap / kAlign; ++n) {
      Record& rec = at(p);
      std::uint64_t tag = rec.tag.load(std::memory_order_acquire);
      if (!tag_at(tag, p)) {
        std::uint64_t f = h->F.load(std::memory_order_acquire);
        if (f > p) {  // freed under us: go on from the new start
          p = f;
          continue;
        }
        break;
      }
      std::uint64_t span = rec.span.load(std::memory_order_relaxed);
      if (!good_span(p, span)) break;
      if (tag_owner(tag) == s) {
        switch (tag_state(tag)) {
          case detail::kWriting:
            if (rec.tag.compare_exchange_strong(tag, make_tag(p, s, detail::kAbandoned)))
              h->abandoned.fetch_add(1, std::memory_order_relaxed);
            break;
          case detail::kReading:
            give_back(rec, tag, p, s);
            break;
          case detail::kHeld:
            if (rec.tag.compare_exchange_strong(tag, make_tag(p, 0, detail::kReleased)))
              h->reclaimed.fetch_add(1, std::memory_order_relaxed);
            break;
          default:
            break;
        }
      }
      p += span;
    }
    auto& sl = h->slot[s];
    // The record a copying get of its was copying, unmarked: given back if
    // it is still taken and not yet freed.
    const std::uint64_t copying = sl.read_pos.load(std::memory_order_acquire);
    if (copying >= h->F.load(std::memory_order_acquire) &&
        copying < h->R.load(std::memory_order_acquire)) {
      Record& rec = at(copying);
      std::uint64_t tag = rec.tag.load(std::memory_order_acquire);
      if (tag_at(tag, copying) && tag_state(tag) == detail::kCommitted)
        give_back(rec, tag, copying, s);
    }
    drop_tasks(sl);
    std::uint32_t sleeping = sl.sleeping.exchange(0);
    if ((sleeping & 1) != 0) h->readers_sleeping.fetch_sub(1);
    if ((sleeping & 2) != 0) h->writers_sleeping.fetch_sub(1);
    if ((sleeping & detail::kPollGet) != 0) h->readers_polling.fetch_sub(1);
    if ((sleeping & detail::kPollPut) != 0) h->writers_polling.fetch_sub(1);
    if (died && close_on_death) {
      for (std::uint32_t side : {detail::kPutter, detail::kGetter})
        if ((sleeping & side) != 0 && find_side(side, s) < 0) close_queue();
    }
    sl.claim_pos.store(~std::uint64_t{0});
    sl.read_pos.store(~std::uint64_t{0});
    std::uint32_t expect = s + 1;
    h->producer_role.compare_exchange_strong(expect, 0);
    expect = s + 1;
    h->consumer_role.compare_exchange_strong(expect, 0);
    pg.reset();
    cg.reset();
    advance_free();
    detail::wake_all(h->read_event);
    detail::wake_all(h->write_event);
  }

  Result<unsigned> recover_all() {
    if (auto ok = enter(); !ok) return std::unexpected(ok.error());
    unsigned n = 0;
    for (unsigned i = 0; i < detail::kSlots; ++i) {
      if (static_cast<int>(i) == slot) continue;
      std::uint32_t w = detail::lock_word(h->slot[i].lease).load();
      if ((w & FUTEX_OWNER_DIED) != 0 && try_recover(i)) ++n;
    }
    return n;
  }

  // ------------------------------------------------------------ writing

  void write_headers(std::uint64_t w, std::uint64_t pad, std::uint64_t need, std::uint64_t len,
                     unsigned owner, detail::State state) {
    const std::uint64_t rec = w + pad;
    Record& r = at(rec);
    r.span.store(static_cast<std::uint32_t>(need), std::memory_order_relaxed);
    r.len.store(static_cast<std::uint32_t>(len), std::memory_order_relaxed);
    r.tag.store(make_tag(rec, owner, state), std::memory_order_release);
    at(rec + need).tag.store(make_tag(rec + need, 0, detail::kEmpty), std::memory_order_release);
    if (pad != 0) {
      Record& p = at(w);
      p.span.store(static_cast<std::uint32_t>(pad), std::memory_order_relaxed);
      p.len.store(0, std::memory_order_relaxed);
      p.tag.store(make_tag(w, owner, detail::kPad), std::memory_order_release);
    }
  }

  // Claims a record for `len` bytes: its position, or would-block. With
  // `copy` (a put, not a loan), the payload is copied in first, into space
  // nobody reads yet, so that the record's header goes from Writing to
  // Committed with nothing in between: a consumer spinning on it sees it
  // change once, not twice. Done with one producer, and for a message of
  // at most kCopyInClaim bytes, whose copy holds the producers' lock only
  // briefly.
  Result<std::uint64_t> try_claim(std::uint64_t len, const std::byte* copy = nullptr) {
    if (h->closed.load(std::memory_order_acquire) != 0) [[unlikely]]
      return fail(EPIPE, fmt::format("put on {}: it is closed", what()));
    std::optional<MutexGuard> guard;
    if (!one_producer) {
      auto g = lock_claims(true);
      if (!g) return fail(g.error(), "put on " + what());
      guard.emplace(std::move(*g));
    }
    const std::uint64_t need = round_up(kRecordHeader + len, kAlign);
    const std::uint64_t w = h->W.load(std::memory_order_relaxed);
    const std::uint64_t loc = w & mask;
    const std::uint64_t pad = loc + need > cap ? cap - loc : 0;
    const std::uint64_t total = pad + need;
    if (w + total + kAlign > cached_free + cap) {
      cached_free = h->F.load(std::memory_order_acquire);
      if (w + total + kAlign > cached_free + cap) {
        if (int dead = note_free_blocker(); dead >= 0) {
          guard.reset();
          try_recover(static_cast<unsigned>(dead));
        }
        return blocked(Block::full);
      }
    }
    const std::uint64_t puts = h->puts.load(std::memory_order_relaxed);
    if (capacity_messages != 0 && puts - cached_gets >= capacity_messages) {
      cached_gets = h->gets.load(std::memory_order_acquire);
      if (puts - cached_gets >= capacity_messages) {
        if (int dead = note_free_blocker(); dead >= 0) {
          guard.reset();
          try_recover(static_cast<unsigned>(dead));
        }
        return blocked(Block::at_capacity);
      }
    }
    if (copy != nullptr && len != 0) std::memcpy(payload(w + pad), copy, len);
    auto& sl = me();
    sl.claim_total.store(total, std::memory_order_relaxed);
    sl.claim_need.store(need, std::memory_order_relaxed);
    sl.claim_puts.store(puts + 1, std::memory_order_relaxed);
    sl.claim_pos.store(w, std::memory_order_release);
    write_headers(w, pad, need, len, static_cast<unsigned>(slot), detail::kWriting);
    h->puts.store(puts + 1, std::memory_order_relaxed);
    h->W.store(w + total, std::memory_order_release);
    return w + pad;
  }

  // What a full queue waits for: the record at F, if a reader holds it.
  // Returns that reader's slot if it is dead (the caller cleans up, with
  // no lock held), else -1.
  int note_free_blocker() {
    blocker = -1;
    int o = holder_at_free();
    if (o < 0) return -1;
    if (lease_dead(h->slot[o].lease)) return o;
    blocker = o;
    return -1;
  }

  // The reader holding the oldest record not yet free (the one at F): its
  // slot, or -1 if none does.
  int holder_at_free() const noexcept {
    std::uint64_t f = h->F.load(std::memory_order_acquire);
    std::uint64_t tag = at(f).tag.load(std::memory_order_acquire);
    auto st = tag_state(tag);
    if (!tag_at(tag, f)) return -1;
    unsigned o = detail::kSlots;
    if (st == detail::kReading || st == detail::kHeld) {
      o = tag_owner(tag);
    } else if (st == detail::kCommitted && f < h->R.load(std::memory_order_acquire)) {
      // Being copied (unmarked): the reader's slot says so.
      for (unsigned i = 0; i < detail::kSlots; ++i)
        if (h->slot[i].read_pos.load(std::memory_order_acquire) == f) o = i;
    }
    return o < detail::kSlots ? static_cast<int>(o) : -1;
  }

  // A reader about to sleep on an empty queue: the message it waits for may
  // be one another reader took and died with. If the holder of the oldest
  // taken record is dead, it is cleaned up (its message comes back: true);
  // if alive, it is watched when nothing else is.
  bool recover_taken() {
    if (h->F.load(std::memory_order_acquire) == h->R.load(std::memory_order_acquire)) return false;
    int o = holder_at_free();
    if (o < 0 || o == slot) return false;
    if (lease_dead(h->slot[o].lease)) return try_recover(static_cast<unsigned>(o)), true;
    if (blocker < 0) blocker = o;
    return false;
  }

  void commit(std::uint64_t rec, std::uint64_t len) {
    Record& r = at(rec);
    r.len.store(static_cast<std::uint32_t>(len), std::memory_order_relaxed);
    // An exchange, not a store: a full barrier before the sleepers are read
    // (their count is raised before they look at the ring again).
    r.tag.exchange(make_tag(rec, static_cast<unsigned>(slot), detail::kCommitted));
    if (h->readers_sleeping.load(std::memory_order_relaxed) != 0) [[unlikely]]
      detail::wake_all(h->read_event);
    if (h->readers_polling.load(std::memory_order_relaxed) != 0) [[unlikely]]
      notify_pollers(detail::kPollGet);
  }

  // A loan given back: the record is skipped like a dead writer's (and
  // counted as taken, so that size() and the tasks stay right).
  void cancel(std::uint64_t rec) {
    h->cancelled.fetch_add(1, std::memory_order_relaxed);
    at(rec).tag.exchange(make_tag(rec, static_cast<unsigned>(slot), detail::kAbandoned));
    if (h->readers_sleeping.load(std::memory_order_relaxed) != 0) detail::wake_all(h->read_event);
  }

  // ------------------------------------------------------------ reading

  struct Taken {
    std::uint64_t pos;
    std::uint64_t len;
    std::uint64_t span = 0;  // 0: the record is marked taken (Reading, Held)
  };

  // Takes the next message (Held for a view; for a copy, unmarked, or
  // Reading if it was Returned); `room` is the most the caller can take
  // (EMSGSIZE, and it stays, beyond it).
  Result<Taken> try_take(bool view, std::size_t room, bool exact) {
    std::optional<MutexGuard> guard;
    if (!one_consumer) {
      auto g = lock_claims(false);
      if (!g) return fail(g.error(), "get from " + what());
      guard.emplace(std::move(*g));
    }
    const auto state = view ? detail::kHeld : detail::kReading;
    const auto me1 = static_cast<unsigned>(slot);
    if (h->returned.load(std::memory_order_acquire) != 0) [[unlikely]] {
      if (auto t = take_returned(state, room, exact)) return *t;
    }
    const bool closed = h->closed.load(std::memory_order_acquire) != 0;
    std::uint64_t r = h->R.load(std::memory_order_relaxed);
    auto& sl = me();
    for (std::uint64_t n = 0; n <= cap / kAlign; ++n) {
      Record& rec = at(r);
      std::uint64_t tag = rec.tag.load(std::memory_order_acquire);
      if (!tag_at(tag, r) || tag_state(tag) == detail::kEmpty) {
        blocker = -1;
        if (one_producer) note_producer();
        if (closed) return fail(errc::end_of_stream, "get from " + what());
        return blocked(Block::empty);
      }
      const std::uint64_t span = rec.span.load(std::memory_order_relaxed);
      if (!good_span(r, span)) return corrupt(r, "get from");
      switch (tag_state(tag)) {
        case detail::kWriting: {
          unsigned o = tag_owner(tag);
          if (o < detail::kSlots && lease_dead(h->slot[o].lease)) {
            guard.reset();
            try_recover(o);
            blocker = -1;
          } else {
            blocker = static_cast<int>(o);
          }
          return blocked(Block::being_written);
        }
        case detail::kPad:
        case detail::kAbandoned: {
          const std::uint64_t gets = h->gets.load(std::memory_order_relaxed);
          const std::uint64_t add = tag_state(tag) == detail::kAbandoned ? 1 : 0;
          sl.read_gets.store(gets + add, std::memory_order_relaxed);
          sl.read_pos.store(r, std::memory_order_release);
          rec.tag.store(make_tag(r, 0, detail::kReleased), std::memory_order_release);
          h->gets.store(gets + add, std::memory_order_relaxed);
          h->R.store(r + span, std::memory_order_release);
          r += span;
          continue;
        }
        case detail::kCommitted: {
          const std::uint64_t len = rec.len.load(std::memory_order_relaxed);
          if (len > max_message || len + kRecordHeader > span) return corrupt(r, "get from");
          if (exact && len != room)
            return fail(EBADMSG, fmt::format("get a value of {} bytes from {}: the next message "
                                             "is {} bytes",
                                             room, what(), len));
          if (len > room)
            return fail(EMSGSIZE, fmt::format("get from {}: the next message is {} bytes, "
                                              "more than the {} given for it",
                                              what(), len, room));
          const std::uint64_t gets = h->gets.load(std::memory_order_relaxed);
          sl.read_gets.store(gets + 1, std::memory_order_relaxed);
          sl.read_pos.store(r, std::memory_order_release);
          if (view) {
            rec.tag.store(make_tag(r, me1, state), std::memory_order_release);
            count_taken();  // a view is the caller's from here
          }
          h->gets.store(gets + 1, std::memory_order_relaxed);
          h->R.store(r + span, std::memory_order_release);
          return Taken{r, len, view ? 0 : span};
        }
        default:
          return corrupt(r, "get from");
      }
    }
    return corrupt(r, "get from");
  }

  // A Returned record between F and R (the hint can be stale).
  bool any_returned() const noexcept {
    std::uint64_t p = h->F.load(std::memory_order_acquire);
    const std::uint64_t r = h->R.load(std::memory_order_acquire);
    for (std::uint64_t n = 0; p < r && n <= cap / kAlign; ++n) {
      const Record& rec = at(p);
      std::uint64_t tag = rec.tag.load(std::memory_order_acquire);
      const std::uint64_t span = rec.span.load(std::memory_order_relaxed);
      if (!tag_at(tag, p) || !good_span(p, span)) return false;
      if (tag_state(tag) == detail::kReturned) return true;
      p += span;
    }
    return false;
  }

  // A message a dead reader had claimed, given back: it goes first.
  std::optional<Taken> take_returned(detail::State state, std::size_t room, bool exact) {
    std::uint32_t hint = h->returned.load(std::memory_order_acquire);
    std::uint64_t p = h->F.load(std::memory_order_acquire);
    const std::uint64_t r = h->R.load(std::memory_order_acquire);
    for (std::uint64_t n = 0; p < r && n <= cap / kAlign; ++n) {
      Record& rec = at(p);
      std::uint64_t tag = rec.tag.load(std::memory_order_acquire);
      const std::uint64_t span = rec.span.load(std::memory_order_relaxed);
      if (!tag_at(tag, p) || !good_span(p, span)) return std::nullopt;
      if (tag_state(tag) == detail::kReturned) {
        const std::uint64_t len = rec.len.load(std::memory_order_relaxed);
        if (len > max_message || len + kRecordHeader > span || len > room || (exact && len != room))
          return std::nullopt;
        if (rec.tag.compare_exchange_strong(tag, make_tag(p, static_cast<unsigned>(slot), state))) {
          if (state == detail::kHeld) count_taken();
          return Taken{p, len};
        }
      }
      p += span;
    }
    // None left, unless a recovery gave one back since the scan began (it
    // changes the record, then the hint): then the hint stays.
    h->returned.compare_exchange_strong(hint, 0, std::memory_order_acq_rel);
    return std::nullopt;
  }

  // ------------------------------------------------------------ sides (close_on_death)

  void close_queue() noexcept {
    h->closed.store(1, std::memory_order_release);
    detail::wake_all(h->read_event);
    detail::wake_all(h->write_event);
    notify_pollers(detail::kPollGet);
    notify_pollers(detail::kPollPut);
  }

  // ------------------------------------------------------------ the pollable descriptor
  //
  // Each participant that asks for fd() binds a datagram socket in the
  // abstract namespace, named by the queue's id and its slot. A try_get
  // (try_put) that would block arms it: sets kPollGet (kPollPut) in its
  // slot and counts it in readers_polling (writers_polling), then looks
  // again, so that a put made meanwhile is not missed. Whoever commits
  // (releases) a message and sees the count clears the bit and sends the
  // socket one byte: one system call per arming, none while nobody polls.

  Fd poll_socket;      // ours, bound (fd())
  Fd poll_sender;      // unbound, to wake others
  int poll_slot = -1;  // the slot poll_socket is named for
  std::uint32_t armed = 0;

  static sockaddr_un poll_address(std::uint64_t id, unsigned s, socklen_t& len) noexcept {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    int n = std::snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "tether-queue/%016llx/%u",
                          static_cast<unsigned long long>(id), s);
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + static_cast<std::size_t>(n));
    return a;
  }

  Result<int> descriptor() {
    if (auto ok = enter(); !ok) return std::unexpected(ok.error());
    if (poll_socket && poll_slot == slot) return poll_socket.get();
    Fd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!s) return fail(errno, "make the descriptor of " + what());
    socklen_t len = 0;
    sockaddr_un a = poll_address(h->id, static_cast<unsigned>(slot), len);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), len) != 0)
      return fail(errno, fmt::format("bind the descriptor of {} (@{})", what(), a.sun_path + 1));
    poll_socket = std::move(s);
    poll_slot = slot;
    // Armed from the start, so that a message already queued shows.
    arm(detail::kPollGet);
    if (h->W.load(std::memory_order_acquire) != h->R.load(std::memory_order_acquire) ||
        h->closed.load(std::memory_order_acquire) != 0) {
      const char one = 1;
      (void)::sendto(poll_socket.get(), &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL,
                     reinterpret_cast<sockaddr*>(&a), len);
    }
    return poll_socket.get();
  }

  // After a try_ form would block: arm (if fd() was asked for) and look
  // again; true if the caller should try once more.
  bool arm(std::uint32_t bit) {
    if (!poll_socket || poll_slot != slot) return false;
    // What woke it before is spent: it must not stay readable.
    drain();
    auto& count = bit == detail::kPollGet ? h->readers_polling : h->writers_polling;
    if ((me().sleeping.fetch_or(bit) & bit) == 0) count.fetch_add(1);
    armed |= bit;
    return true;
  }

  // After a success: no longer armed; what the socket holds is drained.
  void disarm(std::uint32_t bit) {
    if ((armed & bit) == 0) [[likely]]
      return;
    armed &= ~bit;
    auto& count = bit == detail::kPollGet ? h->readers_polling : h->writers_polling;
    if ((me().sleeping.fetch_and(~bit) & bit) != 0) count.fetch_sub(1);
    drain();
  }

  void drain() noexcept {
    char buf[64];
    while (::recv(poll_socket.get(), buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
  }

  void notify_pollers(std::uint32_t bit) noexcept {
    auto& count = bit == detail::kPollGet ? h->readers_polling : h->writers_polling;
    for (unsigned i = 0; i < detail::kSlots && count.load(std::memory_order_relaxed) != 0; ++i) {
      auto& sl = h->slot[i];
      if ((sl.sleeping.load(std::memory_order_relaxed) & bit) == 0) continue;
      if ((sl.sleeping.fetch_and(~bit) & bit) == 0) continue;  // another waker was first
      count.fetch_sub(1);
      if (!poll_sender)
        poll_sender.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      socklen_t len = 0;
      sockaddr_un a = poll_address(h->id, i, len);
      const char one = 1;
      // A full socket is already readable; a gone one has nobody to tell.
      (void)::sendto(poll_sender.get(), &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL,
                     reinterpret_cast<sockaddr*>(&a), len);
    }
  }

  // A live participant other than `except` that has put (kPutter) or got
  // (kGetter): its slot, or -1.
  int find_side(std::uint32_t side, unsigned except) const noexcept {
    for (unsigned i = 0; i < detail::kSlots; ++i) {
      if (i == except) continue;
      const auto& sl = h->slot[i];
      if ((sl.sleeping.load(std::memory_order_acquire) & side) != 0 &&
          !lease_dead(const_cast<Mutex&>(sl.lease)) && sl.recovering.load() == 0)
        return static_cast<int>(i);
    }
    return -1;
  }

  // On a close_on_death queue: says which side this participant is on, and
  // keeps an eye on one participant of the other side (`watch`), cleaning
  // up after it if it died (which closes the queue if it was the last).
  void watch_peers(std::uint32_t mine, std::uint32_t theirs) {
    if ((side_bits & mine) == 0) {
      me().sleeping.fetch_or(mine);
      side_bits |= mine;
    }
    if (watch >= 0) {
      auto& sl = h->slot[watch];
      if ((sl.sleeping.load(std::memory_order_relaxed) & theirs) != 0 && !lease_dead(sl.lease))
          [[likely]]
        return;
    }
    // Lost sight of it: any of that side dead is cleaned up, then another
    // live one is watched.
    for (unsigned i = 0; i < detail::kSlots; ++i) {
      auto& sl = h->slot[i];
      if (static_cast<int>(i) == slot ||
          (sl.sleeping.load(std::memory_order_acquire) & theirs) == 0)
        continue;
      if (lease_dead(sl.lease) && sl.recovering.load() == 0) try_recover(i);
    }
    watch = find_side(theirs, static_cast<unsigned>(slot));
  }

  // What a participant got and never said done is done by nobody: counted
  // done (and dropped). The slot is cleared first, so that a death in
  // between loses the count (join waits to its deadline) rather than
  // counting it twice (join would return early).
  void drop_tasks(detail::QueueSlot& sl) noexcept {
    const std::uint32_t taken = sl.tasks_taken.load(), done = sl.tasks_done.load();
    sl.tasks_taken.store(0);
    sl.tasks_done.store(0);
    const std::uint32_t open = taken - done;
    if (open != 0 && open < (1u << 31)) {
      h->tasks_done.fetch_add(open);
      h->tasks_dropped.fetch_add(open);
      detail::wake_all(h->join_event);
    }
  }

  void count_taken() noexcept {
    auto& t = me().tasks_taken;
    t.store(t.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }

  // ------------------------------------------------------------ tasks

  // Messages put (or being put) and not yet task_done()'d.
  std::int64_t unfinished() const noexcept {
    const auto done = h->tasks_done.load(std::memory_order_acquire);
    const auto abandoned = h->abandoned.load(std::memory_order_acquire);
    const auto cancelled = h->cancelled.load(std::memory_order_acquire);
    const auto puts = h->puts.load(std::memory_order_acquire);
    return static_cast<std::int64_t>(puts - abandoned - cancelled - done);
  }

  Result<void> task_done() {
    if (auto ok = enter(); !ok) [[unlikely]]
      return std::unexpected(ok.error());
    auto& sl = me();
    const std::uint32_t done = sl.tasks_done.load(std::memory_order_relaxed);
    if (done == sl.tasks_taken.load(std::memory_order_relaxed))
      return fail(EINVAL, fmt::format("task_done on {}: called more times than this "
                                      "participant got messages",
                                      what()));
    sl.tasks_done.store(done + 1, std::memory_order_release);
    h->tasks_done.fetch_add(1, std::memory_order_acq_rel);
    if (h->joiners_sleeping.load(std::memory_order_acquire) != 0 && unfinished() <= 0)
      detail::wake_all(h->join_event);
    return {};
  }

  Result<void> join(Deadline deadline) {
    if (auto ok = enter(); !ok) [[unlikely]]
      return std::unexpected(ok.error());
    for (;;) {
      if (unfinished() <= 0) return {};
      if (deadline.expired())
        return fail(ETIMEDOUT, fmt::format("join {}: {} messages not yet done at the deadline",
                                           what(), unfinished()));
      h->joiners_sleeping.fetch_add(1, std::memory_order_acq_rel);
      const std::uint32_t seen = h->join_event.load(std::memory_order_acquire);
      if (unfinished() > 0) {
        // A dead consumer's tasks are found by looking for it: every 100 ms.
        auto until = std::min(deadline.time_point(),
                              Deadline::clock::now() + std::chrono::milliseconds(100));
        (void)detail::futex_wait(h->join_event, seen, Deadline::at(until));
      }
      h->joiners_sleeping.fetch_sub(1, std::memory_order_acq_rel);
      if (unfinished() > 0) (void)recover_all();
    }
  }

  // With one producer, an empty queue waits on it: its death wakes us.
  void note_producer() {
    std::uint32_t p = h->producer_role.load(std::memory_order_relaxed);
    if (p == 0 || p > detail::kSlots || static_cast<int>(p - 1) == slot) return;
    if (lease_dead(h->slot[p - 1].lease))
      try_recover(p - 1);
    else
      blocker = static_cast<int>(p - 1);
  }

  // The end of a copying get; its message is now the caller's.
  void release(const Taken& t) {
    if (t.span != 0)
      release_copied(t.pos, t.span);
    else
      release(t.pos, true);
  }

  // A view given back (or, `copied`, a marked record copied).
  void release(std::uint64_t rec, bool copied = false) {
    at(rec).tag.exchange(make_tag(rec, 0, detail::kReleased));
    if (copied) count_taken();
    advance_free();
    if (h->writers_sleeping.load(std::memory_order_relaxed) != 0) [[unlikely]]
      detail::wake_all(h->write_event);
    if (h->writers_polling.load(std::memory_order_relaxed) != 0) [[unlikely]]
      notify_pollers(detail::kPollPut);
  }

  // The end of a copying get of an unmarked record (Taken::span != 0).
  void release_copied(std::uint64_t rec, std::uint64_t span) {
    count_taken();
    std::uint64_t f = rec;
    if (h->F.compare_exchange_strong(f, rec + span, std::memory_order_acq_rel)) {
      // Others' records after it may be Released already.
      if (!one_consumer) advance_free();
    } else {
      // Something before it is not free yet: whoever frees that moves F.
      at(rec).tag.exchange(make_tag(rec, 0, detail::kReleased));
      advance_free();
    }
    if (h->writers_sleeping.load(std::memory_order_relaxed) != 0) [[unlikely]]
      detail::wake_all(h->write_event);
    if (h->writers_polling.load(std::memory_order_relaxed) != 0) [[unlikely]]
      notify_pollers(detail::kPollPut);
  }

  void advance_free() {
    for (std::uint64_t n = 0; n <= cap / kAlign; ++n) {
      std::uint64_t f = h->F.load(std::memory_order_acquire);
      Record& rec = at(f);
      std::uint64_t tag = rec.tag.load(std::memory_order_acquire);
      if (!tag_at(tag, f) || tag_state(tag) != detail::kReleased) return;
      std::uint64_t span = rec.span.load(std::memory_order_relaxed);
      if (!good_span(f, span)) return;
      h->F.compare_exchange_weak(f, f + span, std::memory_order_acq_rel);
    }
  }

  // ------------------------------------------------------------ waiting

  // False if a get would surely still find nothing: the record at R is
  // not yet committed, and nothing was given back or closed.
  bool message_may_be_there() const noexcept {
    const std::uint64_t r = h->R.load(std::memory_order_relaxed);
    const std::uint64_t tag = at(r).tag.load(std::memory_order_acquire);
    if (tag_at(tag, r) && tag_state(tag) != detail::kEmpty && tag_state(tag) != detail::kWriting)
      return true;
    __builtin_prefetch(ring + ((r + kAlign) & mask));
    return h->returned.load(std::memory_order_relaxed) != 0 ||
           h->closed.load(std::memory_order_relaxed) != 0;
  }

  template <class Attempt>
  auto wait(bool reader, Deadline deadline, Attempt attempt) -> decltype(attempt()) {
    auto r = attempt();
    if (r) [[likely]] {
      if (armed != 0) [[unlikely]]
        disarm(reader ? detail::kPollGet : detail::kPollPut);
      return r;
    }
    if (!would_block(r.error())) return r;
    if (deadline.expired()) {
      if (arm(reader ? detail::kPollGet : detail::kPollPut)) {
        r = attempt();  // a message put meanwhile is not missed
        if (r) disarm(reader ? detail::kPollGet : detail::kPollPut);
      }
      return described(std::move(r));
    }
    for (unsigned i = 0; i < spin; ++i) {
      detail::cpu_relax();
      // A reader looks at the one word that changes when a message comes,
      // and makes a whole attempt only then (or every 64th look, which also
      // keeps an eye on the dead): the sooner a look ends, the sooner the
      // message is seen.
      if (reader && (i & 63) != 63 && !message_may_be_there()) continue;
      r = attempt();
      if (r || !would_block(r.error())) return r;
    }
    auto& sleepers = reader ? h->readers_sleeping : h->writers_sleeping;
    auto& event = reader ? h->read_event : h->write_event;
    const std::uint32_t bit = reader ? 1 : 2;
    for (;;) {
      me().sleeping.fetch_or(bit);
      sleepers.fetch_add(1);
      const std::uint32_t ev = event.load();
      r = attempt();
      bool done = r || !would_block(r.error());
      if (!done && reader && recover_taken()) {
        r = attempt();
        done = r || !would_block(r.error());
      }
      if (!done && !deadline.expired()) {
        // A safety net of 100 ms: deaths are normally seen through the lease.
        Deadline nap = min(deadline, Deadline(std::chrono::milliseconds(100)));
        const int b = blocker >= 0 ? blocker : watch;
        if (b >= 0 && b < static_cast<int>(detail::kSlots)) {
          Mutex* lease = &h->slot[b].lease;
          (void)detail::wait_for_leases(std::span(&lease, 1), &event, ev, true, nap);
        } else {
          (void)detail::futex_wait(event, ev, nap);
        }
      }
      me().sleeping.fetch_and(~bit);
      sleepers.fetch_sub(1);
      if (done) return r;
      if (deadline.expired()) {
        r = attempt();
        if (r || !would_block(r.error())) return r;
        return detail::timed_out(fmt::format("{} {}: still {} at the deadline",
                                             reader ? "get from" : "put on", what(),
                                             reader ? "empty" : "full"));
      }
    }
  }

  // Copies before claiming (see try_claim) when that holds up nobody.
  static constexpr std::size_t kCopyInClaim = 512;
  bool copies_in_claim(std::size_t len) const noexcept {
    return one_producer || len <= kCopyInClaim;
  }

  Result<std::uint64_t> claim(std::size_t len, Deadline deadline, const std::byte* copy = nullptr) {
    if (auto ok = enter(); !ok) [[unlikely]]
      return std::unexpected(ok.error());
    if (len > max_message) [[unlikely]]
      return fail(EMSGSIZE, fmt::format("put {} bytes on {}: its largest message is {}", len,
                                        what(), max_message));
    if (one_producer) {
      if (auto ok = take_role(h->producer_role, producer, "be the producer of"); !ok)
        return std::unexpected(ok.error());
    }
    if (close_on_death) [[unlikely]]
      return wait(false, deadline, [&] {
        watch_peers(detail::kPutter, detail::kGetter);
        return try_claim(len, copy);
      });
    return wait(false, deadline, [&] { return try_claim(len, copy); });
  }

  Result<Taken> take(bool view, std::size_t room, Deadline deadline, bool exact = false) {
    if (auto ok = enter(); !ok) [[unlikely]]
      return std::unexpected(ok.error());
    if (one_consumer) {
      if (auto ok = take_role(h->consumer_role, consumer, "be the consumer of"); !ok)
        return std::unexpected(ok.error());
    }
    if (close_on_death) [[unlikely]]
      return wait(true, deadline, [&] {
        watch_peers(detail::kGetter, detail::kPutter);
        return try_take(view, room, exact);
      });
    return wait(true, deadline, [&] { return try_take(view, room, exact); });
  }
};

// ---------------------------------------------------------------- making and opening

namespace {

Result<std::unique_ptr<Queue::Impl>> attach(std::shared_ptr<detail::Segment> sh) {
  auto impl = std::make_unique<Queue::Impl>();
  auto* h = std::launder(reinterpret_cast<QueueHeader*>(sh->map.data()));
  impl->h = h;
  impl->ring = sh->map.data() + h->ring_offset;
  impl->cap = h->ring_bytes;
  impl->mask = h->ring_bytes - 1;
  impl->max_message = h->max_message;
  impl->capacity_messages = h->capacity_messages;
  impl->one_producer = h->one_producer != 0;
  impl->one_consumer = h->one_consumer != 0;
  impl->close_on_death = h->close_on_death != 0;
  impl->sh = std::move(sh);
  if (auto ok = impl->enter(); !ok) {
    impl->h = nullptr;  // nothing to leave
    return std::unexpected(ok.error());
  }
  return impl;
}

Result<std::uint64_t> ring_size(const QueueOptions& o) {
  if (o.max_message == 0 || o.max_message > (std::size_t{1} << 30))
    return fail(EINVAL,
                fmt::format("make a queue: max_message {} is not 1 to 1 GiB", o.max_message));
  const std::uint64_t need = round_up(kRecordHeader + o.max_message, kAlign);
  const std::uint64_t least = 2 * need + kAlign;
  std::uint64_t want = o.capacity_bytes;
  if (want == 0) {
    want = o.capacity_messages != 0 ? need * o.capacity_messages + need + kAlign : 1u << 20;
    want = std::max(want, least);
  } else if (want < least) {
    return fail(EINVAL, fmt::format("make a queue: capacity_bytes {} cannot hold a message of "
                                    "max_message {} (at least {} bytes)",
                                    o.capacity_bytes, o.max_message, least));
  }
  if (want > (std::uint64_t{1} << 40))
    return fail(EINVAL, "make a queue: capacity_bytes over 1 TiB");
  return std::bit_ceil(std::max<std::uint64_t>(want, detail::kMinRing));
}

void initialise(const detail::Segment& seg, const QueueOptions& o, std::uint64_t ring) {
  auto* h = ::new (static_cast<void*>(seg.data())) QueueHeader();
  h->ring_offset = detail::kRingOffset;
  h->ring_bytes = ring;
  h->max_message = o.max_message;
  h->capacity_messages = o.capacity_messages;
  h->total_bytes = detail::kRingOffset + ring;
  h->one_producer = o.producers == Ends::one ? 1 : 0;
  h->one_consumer = o.consumers == Ends::one ? 1 : 0;
  h->slots = detail::kSlots;
  h->close_on_death = o.close_on_death ? 1 : 0;
  if (::getrandom(&h->id, sizeof h->id, 0) != static_cast<ssize_t>(sizeof h->id))
    h->id = (static_cast<std::uint64_t>(::getpid()) << 32) ^
            static_cast<std::uint64_t>(::time(nullptr));
  h->prefix.magic = detail::kMagic;
  h->prefix.version = detail::kVersion;
  h->prefix.header_bytes = sizeof(QueueHeader);
  h->prefix.map_bytes = seg.map.size();
  seg.publish();
}

// Everything a participant trusts in a header another process wrote (the
// prefix is checked by open_segment).
Result<void> validate(const detail::Segment& seg) {
  auto bad = [&](std::string why) {
    return fail(errc::bad_record, fmt::format("open {}: {}", seg.what, why));
  };
  const std::size_t size = seg.map.size();
  const auto* h = std::launder(reinterpret_cast<const QueueHeader*>(seg.data()));
  if (h->ring_offset != detail::kRingOffset || h->slots != detail::kSlots)
    return bad("its header's layout is not this version's");
  if (h->ring_bytes < detail::kMinRing || !std::has_single_bit(h->ring_bytes) ||
      h->ring_bytes > (std::uint64_t{1} << 40) ||
      h->total_bytes != h->ring_offset + h->ring_bytes || h->total_bytes > size)
    return bad(fmt::format("a ring of {} bytes does not fit its {} bytes", h->ring_bytes, size));
  if (h->max_message == 0 ||
      2 * round_up(kRecordHeader + h->max_message, kAlign) + kAlign > h->ring_bytes)
    return bad(fmt::format("max_message {} does not fit its ring", h->max_message));
  if (h->one_producer > 1 || h->one_consumer > 1) return bad("its ends are neither one nor many");
  if (h->close_on_death > 1) return bad("its close_on_death is neither 0 nor 1");
  return {};
}

Result<Queue> make(const std::string& name, const QueueOptions& options) {
  auto ring = ring_size(options);
  if (!ring)
    return fail(ring.error(), name.empty() ? "make an anonymous queue" : "create queue " + name);
  auto seg = detail::create_segment(detail::kQueueKind, name, detail::kRingOffset + *ring, 0,
                                    sizeof(QueueHeader), options.mode);
  if (!seg) return std::unexpected(seg.error());
  initialise(**seg, options, *ring);
  auto impl = attach(std::move(*seg));
  if (!impl) return std::unexpected(impl.error());
  (*impl)->spin = options.spin;
  return Queue(std::move(*impl));
}

Result<Queue> joined(Result<std::shared_ptr<detail::Segment>> seg) {
  if (!seg) return std::unexpected(seg.error());
  if (auto ok = validate(**seg); !ok) return std::unexpected(ok.error());
  auto impl = attach(std::move(*seg));
  if (!impl) return std::unexpected(impl.error());
  return Queue(std::move(*impl));
}

}  // namespace

Queue::Queue() noexcept = default;
Queue::Queue(std::unique_ptr<Impl> p) noexcept : p_(std::move(p)) {}
Queue::Queue(Queue&&) noexcept = default;
Queue& Queue::operator=(Queue&&) noexcept = default;
Queue::~Queue() = default;

Result<Queue> Queue::create(const std::string& name, QueueOptions options) {
  if (name.empty()) return fail(EINVAL, "create queue: the name is empty");
  return make(name, options);
}

Result<Queue> Queue::open(const std::string& name, Deadline ready) {
  return joined(detail::open_segment(detail::kQueueKind, name, sizeof(QueueHeader), ready));
}

Result<Queue> Queue::anonymous(QueueOptions options) {
  return make("", options);
}

Result<Queue> Queue::adopt(Fd memory) {
  return joined(detail::adopt_segment(detail::kQueueKind, std::move(memory), sizeof(QueueHeader)));
}

Result<Queue> Queue::another() const {
  if (!p_) return fail(EINVAL, "another participant of a queue: this one holds none");
  auto impl = attach(p_->sh);
  if (!impl) return std::unexpected(impl.error());
  (*impl)->spin = p_->spin;
  return Queue(std::move(*impl));
}

Result<void> Queue::remove() {
  if (!p_) return fail(EINVAL, "remove a queue: none held");
  if (!p_->sh->named || !p_->sh->named->owns()) return {};
  return p_->sh->named->remove();
}

int Queue::memory_fd() const noexcept {
  return p_ ? p_->sh->fd() : -1;
}

const std::string& Queue::description() const noexcept {
  static const std::string none = "no queue";
  return p_ ? p_->what() : none;
}

// ---------------------------------------------------------------- messages

namespace {
std::unexpected<Error> no_queue(const char* op) {
  return fail(EINVAL, std::string(op) + " a queue: this object holds none");
}
}  // namespace

Result<void> Queue::put(std::span<const std::byte> message, Deadline deadline) {
  if (!p_) return no_queue("put on");
  const bool early = p_->copies_in_claim(message.size());
  auto rec = p_->claim(message.size(), deadline, early ? message.data() : nullptr);
  if (!rec) return std::unexpected(rec.error());
  if (!early && !message.empty()) std::memcpy(p_->payload(*rec), message.data(), message.size());
  p_->commit(*rec, message.size());
  return {};
}

Result<std::size_t> Queue::get(std::span<std::byte> into, Deadline deadline) {
  if (!p_) return no_queue("get from");
  auto t = p_->take(false, into.size(), deadline);
  if (!t) return std::unexpected(t.error());
  if (t->len != 0) std::memcpy(into.data(), p_->payload(t->pos), t->len);
  p_->release(*t);
  return t->len;
}

Result<void> Queue::get_exactly(std::span<std::byte> into, Deadline deadline) {
  if (!p_) return no_queue("get from");
  auto t = p_->take(false, into.size(), deadline, true);
  if (!t) return std::unexpected(t.error());
  if (t->len != 0) std::memcpy(into.data(), p_->payload(t->pos), t->len);
  p_->release(*t);
  return {};
}

Result<void> Queue::get_into(std::vector<std::byte>& into, Deadline deadline) {
  if (!p_) return no_queue("get from");
  auto t = p_->take(false, p_->max_message, deadline);
  if (!t) return std::unexpected(t.error());
  into.resize(t->len);
  if (t->len != 0) std::memcpy(into.data(), p_->payload(t->pos), t->len);
  p_->release(*t);
  return {};
}

Result<std::vector<std::byte>> Queue::get(Deadline deadline) {
  std::vector<std::byte> out;
  if (auto ok = get_into(out, deadline); !ok) return std::unexpected(ok.error());
  return out;
}

Result<std::string> Queue::get_string(Deadline deadline) {
  if (!p_) return no_queue("get from");
  auto t = p_->take(false, p_->max_message, deadline);
  if (!t) return std::unexpected(t.error());
  std::string out(reinterpret_cast<const char*>(p_->payload(t->pos)), t->len);
  p_->release(*t);
  return out;
}

Result<Queue::Loan> Queue::loan(std::size_t size, Deadline deadline) {
  if (!p_) return no_queue("loan from");
  auto rec = p_->claim(size, deadline);
  if (!rec) return std::unexpected(rec.error());
  return Loan(p_.get(), *rec, std::span(p_->payload(*rec), size));
}

Result<Queue::View> Queue::get_view(Deadline deadline) {
  if (!p_) return no_queue("get from");
  auto t = p_->take(true, p_->max_message, deadline);
  if (!t) return std::unexpected(t.error());
  return View(p_.get(), t->pos, std::span<const std::byte>(p_->payload(t->pos), t->len));
}

Queue::Loan& Queue::Loan::operator=(Loan&& other) noexcept {
  if (this != &other) {
    cancel();
    q_ = std::exchange(other.q_, nullptr);
    pos_ = other.pos_;
    data_ = other.data_;
  }
  return *this;
}

Result<void> Queue::Loan::commit(std::size_t used) {
  if (q_ == nullptr) return fail(EINVAL, "commit a loan: it holds no space (committed already?)");
  if (used > data_.size())
    return fail(EINVAL, fmt::format("commit {} bytes of a loan of {} on {}", used, data_.size(),
                                    q_->what()));
  std::exchange(q_, nullptr)->commit(pos_, used);
  return {};
}

void Queue::Loan::cancel() noexcept {
  if (q_ != nullptr) std::exchange(q_, nullptr)->cancel(pos_);
}

Queue::View& Queue::View::operator=(View&& other) noexcept {
  if (this != &other) {
    release();
    q_ = std::exchange(other.q_, nullptr);
    pos_ = other.pos_;
    data_ = other.data_;
  }
  return *this;
}

void Queue::View::release() noexcept {
  if (q_ != nullptr) std::exchange(q_, nullptr)->release(pos_);
}

// ---------------------------------------------------------------- state

std::size_t Queue::size() const noexcept {
  if (!p_) return 0;
  const auto* h = p_->h;
  std::uint64_t gets = h->gets.load(std::memory_order_acquire);
  std::uint64_t puts = h->puts.load(std::memory_order_acquire);
  return puts > gets ? static_cast<std::size_t>(puts - gets) : 0;
}

bool Queue::empty() const noexcept {
  if (!p_) return true;
  const auto* h = p_->h;
  std::uint64_t r = h->R.load(std::memory_order_acquire);
  std::uint64_t tag = p_->at(r).tag.load(std::memory_order_acquire);
  auto st = tag_state(tag);
  bool next = tag_at(tag, r) && st != detail::kEmpty;
  return !next && (h->returned.load(std::memory_order_relaxed) == 0 || !p_->any_returned());
}

bool Queue::full() const noexcept {
  if (!p_) return false;
  const auto* h = p_->h;
  std::uint64_t f = h->F.load(std::memory_order_acquire);
  std::uint64_t w = h->W.load(std::memory_order_acquire);
  std::uint64_t need = round_up(kRecordHeader + 1, kAlign);
  if (w + need + kAlign > f + p_->cap) return true;
  return p_->capacity_messages != 0 && size() >= p_->capacity_messages;
}

std::size_t Queue::max_message() const noexcept {
  return p_ ? p_->max_message : 0;
}
std::size_t Queue::capacity_bytes() const noexcept {
  return p_ ? p_->cap : 0;
}
std::size_t Queue::capacity_messages() const noexcept {
  return p_ ? p_->capacity_messages : 0;
}
std::size_t Queue::memory_bytes() const noexcept {
  return p_ ? detail::kRingOffset + p_->cap : 0;
}

void Queue::close() noexcept {
  if (!p_) return;
  p_->close_queue();
}

Result<int> Queue::fd() {
  if (!p_) return no_queue("make the descriptor of");
  return p_->descriptor();
}

Result<void> Queue::announce_producer() {
  if (!p_) return no_queue("announce a producer of");
  if (auto ok = p_->enter(); !ok) return ok;
  if (p_->close_on_death) p_->watch_peers(detail::kPutter, detail::kGetter);
  return {};
}

Result<void> Queue::announce_consumer() {
  if (!p_) return no_queue("announce a consumer of");
  if (auto ok = p_->enter(); !ok) return ok;
  if (p_->close_on_death) p_->watch_peers(detail::kGetter, detail::kPutter);
  return {};
}

bool Queue::closed() const noexcept {
  return p_ && p_->h->closed.load(std::memory_order_acquire) != 0;
}

QueueStats Queue::stats() const noexcept {
  QueueStats s;
  if (!p_) return s;
  const auto* h = p_->h;
  s.puts = h->puts.load();
  s.gets = h->gets.load();
  s.abandoned_writes = h->abandoned.load();
  s.redelivered = h->redelivered.load();
  s.reclaimed_views = h->reclaimed.load();
  s.dead_participants = h->dead.load();
  s.tasks_dropped = h->tasks_dropped.load();
  s.cancelled_loans = h->cancelled.load();
  return s;
}

Result<void> Queue::task_done() {
  if (!p_) return no_queue("task_done on");
  return p_->task_done();
}

Result<void> Queue::join(Deadline deadline) {
  if (!p_) return no_queue("join");
  return p_->join(deadline);
}

std::size_t Queue::unfinished_tasks() const noexcept {
  if (!p_) return 0;
  auto n = p_->unfinished();
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

Result<unsigned> Queue::recover() {
  if (!p_) return no_queue("recover");
  return p_->recover_all();
}

}  // namespace tether
