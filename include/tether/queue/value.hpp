// tether/queue/value.hpp — multiprocessing.Value and multiprocessing.Array:
// one T, or an array of them sized at run time, in shared memory, with the
// lock that guards it (get_lock(): a robust mutex) and atomic operations
// that need no lock where T allows them.
//
//   auto hits = tether::Value<long>::anonymous(0);     // shared with fork children
//   if (fork() == 0) { hits->fetch_add(1); _exit(0); } // no lock: one atomic add
//   {
//     auto g = hits->lock();                           // Python's `with v.get_lock():`
//     *hits->get() += 10;                              // in place, under the lock
//   }
//   long n = *hits->load();                            // a locked read
//
//   auto a = tether::Array<double>::create("/weights", 1000);  // named, owned
//   auto b = tether::Array<double>::open("/weights");          // elsewhere
//   b->store(3, 0.5);                                          // one element, locked
//
// Named (POSIX shared memory: create owns the name and removes it when
// destroyed; open joins) or anonymous (a memfd: shared with fork children,
// or passed as memory_fd() over a Unix socket and adopt()ed). Opening checks
// the element's size and alignment and, for arithmetic types, its kind
// (an int64 opened as a double is EINVAL).
//
// A holder of the lock killed -9 is reported to the next locker (the robust
// mutex's owner_died): Value's store() writes a second copy and switches to
// it in one step, so a death mid-store leaves the old value whole. For what
// you write in place through get() and span() under the lock, and for
// Array's element stores, a T larger than one machine word can be left
// half-written by such a death: the guard's owner_died() tells you
// (load()/store() themselves repair and go on: stats().owner_deaths counts
// them).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tether/sync.hpp"
#include "tether/sys.hpp"

namespace tether {

namespace detail {

struct Segment;
struct BlockHeader;

// What Value and Array share (src/queue/value.cpp): a segment holding a
// header, the lock and `count` elements (two copies of one for a Value).
class SharedBlock {
 public:
  struct Type {
    std::uint32_t size;
    std::uint32_t align;
    std::uint32_t code;  // 0: bytes; else a kind of arithmetic type (type_code<T>)
  };
  SharedBlock() noexcept;
  SharedBlock(SharedBlock&&) noexcept;
  SharedBlock& operator=(SharedBlock&&) noexcept;
  ~SharedBlock();

  // `copies` is 2 for a Value (see store()), 1 for an Array. Every element
  // starts as `initial` (one element's bytes) before anyone can open it.
  static Result<SharedBlock> make(const char* noun, const std::string& name, Type type,
                                  std::size_t count, unsigned copies, mode_t mode,
                                  const void* initial);
  static Result<SharedBlock> open(const char* noun, const std::string& name, Type type,
                                  unsigned copies, Deadline ready);
  static Result<SharedBlock> adopt(const char* noun, Fd memory, Type type, unsigned copies);

  bool valid() const noexcept { return h_ != nullptr; }
  Mutex& lock() const noexcept;
  // Locks for load()/store(): a dead holder is counted and the lock marked
  // consistent; errors name the object and `op`.
  Result<MutexGuard> lock_for(const char* op, Deadline deadline) const;
  std::byte* copy(unsigned which) const noexcept;  // element 0 of copy `which`
  std::atomic<std::uint32_t>& active() const noexcept;
  std::size_t count() const noexcept { return count_; }
  std::uint64_t owner_deaths() const noexcept;
  int memory_fd() const noexcept;
  const std::string& description() const noexcept;
  std::size_t memory_bytes() const noexcept;

 private:
  // An opened or adopted segment, checked to hold `type` in `copies`.
  static Result<SharedBlock> joined(Result<std::shared_ptr<Segment>> seg, Type type,
                                    unsigned copies);
  std::shared_ptr<Segment> seg_;
  BlockHeader* h_ = nullptr;
  std::byte* data_ = nullptr;
  std::size_t count_ = 0;
  std::size_t stride_ = 0;  // bytes of one copy
};

template <class T>
constexpr std::uint32_t type_code() noexcept {
  if constexpr (std::is_same_v<T, bool>)
    return 1;
  else if constexpr (std::is_integral_v<T>)
    return (std::is_signed_v<T> ? 0x10 : 0x20) + sizeof(T);
  else if constexpr (std::is_floating_point_v<T>)
    return 0x40 + sizeof(T);
  else
    return 0;
}

template <class T>
constexpr SharedBlock::Type block_type() noexcept {
  return {static_cast<std::uint32_t>(sizeof(T)), static_cast<std::uint32_t>(alignof(T)),
          type_code<T>()};
}

}  // namespace detail

struct SharedValueStats {
  std::uint64_t owner_deaths = 0;  // lock holders found dead by load()/store()
};

// One T in shared memory.
template <class T>
requires std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T>
class Value {
 public:
  Value() noexcept = default;

  static Result<Value> create(const std::string& name, const T& initial = T{}, mode_t mode = 0600) {
    if (name.empty()) return fail(EINVAL, "create shared value: the name is empty");
    return joined(detail::SharedBlock::make("shared value", name, type(), 1, 2, mode, &initial));
  }
  static Result<Value> open(const std::string& name, Deadline ready = std::chrono::seconds(1)) {
    return joined(detail::SharedBlock::open("shared value", name, type(), 2, ready));
  }
  static Result<Value> anonymous(const T& initial = T{}) {
    return joined(detail::SharedBlock::make("shared value", "", type(), 1, 2, 0600, &initial));
  }
  static Result<Value> adopt(Fd memory) {
    return joined(detail::SharedBlock::adopt("shared value", std::move(memory), type(), 2));
  }

  bool valid() const noexcept { return b_.valid(); }
  int memory_fd() const noexcept { return b_.memory_fd(); }
  const std::string& description() const noexcept { return b_.description(); }
  std::size_t memory_bytes() const noexcept { return b_.memory_bytes(); }

  // Python's get_lock(): the robust mutex that guards the value.
  Mutex& get_lock() const noexcept { return b_.lock(); }
  // Locks it (the guard reports a dead previous holder: owner_died()).
  Result<MutexGuard> lock(Deadline deadline = Deadline::never()) const {
    return get_lock().lock(deadline);
  }
  // The value itself, to read or change in place while you hold the lock.
  T* get() const noexcept { return current(); }

  // A locked read, and a locked write that a death cannot tear.
  Result<T> load(Deadline deadline = Deadline::never()) const {
    auto g = b_.lock_for("read", deadline);
    if (!g) return std::unexpected(g.error());
    T v;
    std::memcpy(&v, current(), sizeof(T));
    return v;
  }
  Result<void> store(const T& v, Deadline deadline = Deadline::never()) const {
    auto g = b_.lock_for("write", deadline);
    if (!g) return std::unexpected(g.error());
    const std::uint32_t next = 1 - (b_.active().load(std::memory_order_relaxed) & 1);
    auto* dst = b_.copy(next);
    std::memcpy(dst, &v, sizeof(T));
    b_.active().store(next, std::memory_order_release);
    return {};
  }

  // Lock-free operations, where the hardware has them for T (no lock is
  // taken: do not mix them with in-place writes under the lock).
  std::atomic_ref<T> atomic() const noexcept requires std::atomic_ref<T>::is_always_lock_free {
    return std::atomic_ref<T>(*current());
  }
  T fetch_add(T d, std::memory_order o = std::memory_order_seq_cst)
      const noexcept requires std::is_integral_v<T> && std::atomic_ref<T>::is_always_lock_free {
    return atomic().fetch_add(d, o);
  }
  T fetch_sub(T d, std::memory_order o = std::memory_order_seq_cst)
      const noexcept requires std::is_integral_v<T> && std::atomic_ref<T>::is_always_lock_free {
    return atomic().fetch_sub(d, o);
  }

  SharedValueStats stats() const noexcept { return {b_.owner_deaths()}; }

 private:
  static constexpr detail::SharedBlock::Type type() noexcept { return detail::block_type<T>(); }
  static Result<Value> joined(Result<detail::SharedBlock> b) {
    if (!b) return std::unexpected(b.error());
    Value v;
    v.b_ = std::move(*b);
    return v;
  }
  T* current() const noexcept {
    return std::launder(
        reinterpret_cast<T*>(b_.copy(b_.active().load(std::memory_order_acquire) & 1)));
  }
  detail::SharedBlock b_;
};

// `size` T's in shared memory (the size is chosen at run time).
template <class T>
requires std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T>
class Array {
 public:
  Array() noexcept = default;

  // Every element starts as `initial`.
  static Result<Array> create(const std::string& name, std::size_t size, const T& initial = T{},
                              mode_t mode = 0600) {
    if (name.empty()) return fail(EINVAL, "create shared array: the name is empty");
    return joined(detail::SharedBlock::make("shared array", name, type(), size, 1, mode, &initial));
  }
  static Result<Array> open(const std::string& name, Deadline ready = std::chrono::seconds(1)) {
    return joined(detail::SharedBlock::open("shared array", name, type(), 1, ready));
  }
  static Result<Array> anonymous(std::size_t size, const T& initial = T{}) {
    return joined(detail::SharedBlock::make("shared array", "", type(), size, 1, 0600, &initial));
  }
  static Result<Array> adopt(Fd memory) {
    return joined(detail::SharedBlock::adopt("shared array", std::move(memory), type(), 1));
  }

  bool valid() const noexcept { return b_.valid(); }
  std::size_t size() const noexcept { return b_.count(); }
  int memory_fd() const noexcept { return b_.memory_fd(); }
  const std::string& description() const noexcept { return b_.description(); }
  std::size_t memory_bytes() const noexcept { return b_.memory_bytes(); }

  Mutex& get_lock() const noexcept { return b_.lock(); }
  Result<MutexGuard> lock(Deadline deadline = Deadline::never()) const {
    return get_lock().lock(deadline);
  }
  // The elements, to read or change in place while you hold the lock.
  std::span<T> span() const noexcept {
    return {std::launder(reinterpret_cast<T*>(b_.copy(0))), b_.count()};
  }

  // Locked reads and writes of one element (EINVAL past the end), and of
  // the whole array (a copy; `from` of exactly size() elements).
  Result<T> load(std::size_t i, Deadline deadline = Deadline::never()) const {
    if (auto ok = check(i, "read"); !ok) return std::unexpected(ok.error());
    auto g = b_.lock_for("read", deadline);
    if (!g) return std::unexpected(g.error());
    return span()[i];
  }
  Result<void> store(std::size_t i, const T& v, Deadline deadline = Deadline::never()) const {
    if (auto ok = check(i, "write"); !ok) return ok;
    auto g = b_.lock_for("write", deadline);
    if (!g) return std::unexpected(g.error());
    span()[i] = v;
    return {};
  }
  Result<std::vector<T>> snapshot(Deadline deadline = Deadline::never()) const {
    auto g = b_.lock_for("read", deadline);
    if (!g) return std::unexpected(g.error());
    auto s = span();
    return std::vector<T>(s.begin(), s.end());
  }
  Result<void> assign(std::span<const T> from, Deadline deadline = Deadline::never()) const {
    if (from.size() != size())
      return fail(EINVAL, description() + ": assign " + std::to_string(from.size()) +
                              " elements to an array of " + std::to_string(size()));
    auto g = b_.lock_for("write", deadline);
    if (!g) return std::unexpected(g.error());
    std::memcpy(static_cast<void*>(span().data()), from.data(), from.size_bytes());
    return {};
  }

  // Lock-free, where the hardware allows (see Value). No bounds check:
  // i < size() is yours to keep.
  std::atomic_ref<T> atomic(
      std::size_t i) const noexcept requires std::atomic_ref<T>::is_always_lock_free {
    return std::atomic_ref<T>(span()[i]);
  }
  T fetch_add(std::size_t i, T d, std::memory_order o = std::memory_order_seq_cst)
      const noexcept requires std::is_integral_v<T> && std::atomic_ref<T>::is_always_lock_free {
    return atomic(i).fetch_add(d, o);
  }

  SharedValueStats stats() const noexcept { return {b_.owner_deaths()}; }

 private:
  static constexpr detail::SharedBlock::Type type() noexcept { return detail::block_type<T>(); }
  static Result<Array> joined(Result<detail::SharedBlock> b) {
    if (!b) return std::unexpected(b.error());
    Array a;
    a.b_ = std::move(*b);
    return a;
  }
  Result<void> check(std::size_t i, const char* op) const {
    if (i < size()) return {};
    return fail(EINVAL, std::string(op) + " element " + std::to_string(i) + " of " + description() +
                            ": it has " + std::to_string(size()));
  }
  detail::SharedBlock b_;
};

}  // namespace tether
