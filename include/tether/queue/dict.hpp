// tether/queue/dict.hpp — Manager().dict() without a server process: a
// hash map in one shared segment, string keys, values of bytes or of any
// trivially copyable T.
//
//   auto d = tether::Dict::create("/config");          // named, owned
//   d->set("mode", "fast");
//   d->set_value("workers", 4);
//   ... in another process:
//   auto d = tether::Dict::open("/config");
//   std::string mode = *d->get("mode");                // "fast"
//   int n = *d->get_value<int>("workers");             // 4
//   d->update_value<int>("hits", [](int& n) { ++n; }); // read-modify-write under the lock
//   for (auto& [k, v] : *d->items()) ...               // a consistent snapshot
//
// Readers take no lock and do not block each other or writers: a get reads
// the entry in place and checks, after copying it, that it did not change
// meanwhile (a sequence number per entry), trying again if it did.
// Writers take the dict's lock (a robust mutex) and never change an entry
// readers can see: a set writes a new entry, then publishes it with one
// atomic store, then frees the old one. So a writer killed -9 at any
// instant leaves every key with its old value or its new one, never a torn
// entry, never a lost key; the next writer (or a reader that finds the
// lock's holder dead) rebuilds what the dead writer left half done (its
// free lists, a half-moved erase) and goes on (stats().repairs).
//
// The dict grows past its first capacity in place: the segment is mapped
// once over max_bytes of address space and the file grows under it, so no
// process maps it again. With `fixed`, it never grows and a set that does
// not fit is ENOSPC, saying so.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "tether/sys.hpp"

namespace tether {

struct DictOptions {
  // Entries it holds before it first grows (or at all, when fixed).
  std::size_t capacity = 1024;
  // The key + value size you expect, to size the first segment.
  std::size_t typical_entry = 64;
  // Never grow: ENOSPC once `capacity` entries are held, or no room is left
  // for an entry of that size (space is kept per size class, a power of two).
  bool fixed = false;
  // The most it grows to; each process maps this much address space.
  std::size_t max_bytes = std::size_t{1} << 30;
  // The largest key + value, in bytes.
  std::size_t max_entry = std::size_t{1} << 20;
  mode_t mode = 0600;
};

struct DictStats {
  std::size_t size = 0;            // keys held
  std::size_t table_slots = 0;     // slots of the hash table (grows at 3/4 full)
  std::size_t bytes = 0;           // bytes of shared memory the dict holds now
  std::uint64_t repairs = 0;       // writers found dead and cleaned up after
  std::uint64_t read_retries = 0;  // reads of this process that raced a writer
};

class Dict {
 public:
  Dict() noexcept;
  Dict(Dict&&) noexcept;
  Dict& operator=(Dict&&) noexcept;
  Dict(const Dict&) = delete;
  Dict& operator=(const Dict&) = delete;
  ~Dict();

  // A new named dict (EEXIST if the name is taken), owned: removed when
  // this object is destroyed.
  static Result<Dict> create(const std::string& name, DictOptions options = {});
  // An existing one; a segment that is not a dict, or whose header is
  // corrupt, is refused (EINVAL / bad_record).
  static Result<Dict> open(const std::string& name, Deadline ready = std::chrono::seconds(1));
  // Named nowhere (a memfd): shared with fork children, or passed as
  // memory_fd() over a Unix socket and adopted.
  static Result<Dict> anonymous(DictOptions options = {});
  static Result<Dict> adopt(Fd memory);

  bool valid() const noexcept { return p_ != nullptr; }
  int memory_fd() const noexcept;
  const std::string& description() const noexcept;

  // The value of `key`: errc::no_such_key if it has none.
  Result<std::string> get(std::string_view key) const;
  // Into storage you keep (no allocation when it fits).
  Result<void> get_into(std::string_view key, std::string& into) const;
  template <class T>
  requires std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T> Result<T>
  get_value(std::string_view key)
  const {
    T v;
    auto ok = get_exactly(key, std::as_writable_bytes(std::span(&v, 1)));
    if (!ok) return std::unexpected(ok.error());
    return v;
  }
  // Only a value of exactly into.size() bytes (EBADMSG otherwise).
  Result<void> get_exactly(std::string_view key, std::span<std::byte> into) const;
  Result<bool> contains(std::string_view key) const;

  // Sets `key` to `value` (EMSGSIZE past max_entry, ENOSPC when full).
  Result<void> set(std::string_view key, std::span<const std::byte> value);
  Result<void> set(std::string_view key, std::string_view value) {
    return set(key, std::as_bytes(std::span(value)));
  }
  template <class T>
  requires std::is_trivially_copyable_v<T> Result<void> set_value(std::string_view key,
                                                                  const T& value) {
    return set(key, std::as_bytes(std::span(&value, 1)));
  }
  // Python's setdefault: sets it only if absent; true if it did.
  Result<bool> set_if_absent(std::string_view key, std::span<const std::byte> value);
  Result<bool> set_if_absent(std::string_view key, std::string_view value) {
    return set_if_absent(key, std::as_bytes(std::span(value)));
  }
  // Removes it; true if it was there.
  Result<bool> erase(std::string_view key);
  // Removes it and returns its value (no_such_key if absent): Python's pop.
  Result<std::string> pop(std::string_view key);
  Result<void> clear();

  // Reads, changes and writes back one value under the lock: no other
  // writer comes between. `present` is false (and the value empty) for a
  // new key. Readers see the old value or the new one.
  Result<void> update(std::string_view key,
                      const std::function<void(std::string& value, bool present)>& change);
  // As update(), but `change` returns false to leave the value as it was
  // (nothing is written).
  Result<void> update_if(std::string_view key,
                         const std::function<bool(std::string& value, bool present)>& change);
  // The same for a T (EBADMSG if the value held is not sizeof(T) bytes);
  // a new key starts as `initial`.
  template <class T>
  requires std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T> Result<void>
  update_value(std::string_view key, const std::function<void(T&)>& change, T initial = T{}) {
    bool wrong = false;
    auto ok = update_if(key, [&](std::string& v, bool present) {
      T t = initial;
      if (present) {
        if (v.size() != sizeof(T)) {
          wrong = true;
          return false;  // left as it is
        }
        std::memcpy(&t, v.data(), sizeof(T));
      }
      change(t);
      v.assign(reinterpret_cast<const char*>(&t), sizeof(T));
      return true;
    });
    if (!ok) return ok;
    if (wrong) return fail(EBADMSG, value_size_error(key, sizeof(T)));
    return {};
  }

  // A snapshot (others change it at once).
  std::size_t size() const noexcept;
  bool empty() const noexcept { return size() == 0; }
  // Every key and value, as they all were at one instant.
  Result<std::vector<std::pair<std::string, std::string>>> items() const;
  Result<std::vector<std::string>> keys() const;

  DictStats stats() const noexcept;

  struct Impl;
  explicit Dict(std::unique_ptr<Impl> p) noexcept;

 private:
  std::string value_size_error(std::string_view key, std::size_t want) const;
  std::unique_ptr<Impl> p_;
};

}  // namespace tether
