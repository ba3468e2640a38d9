// tether/shm.hpp — shared memory: POSIX (shm_open), System V (shmget), a
// regular file mapped shared, and anonymous memory (memfd_create).
//
//   auto seg = tether::PosixSharedMemory::create("/counters", 4096);   // 0600, owned
//   auto map = seg->map();                                             // whole segment
//   std::atomic<long>* n = *map->construct<std::atomic<long>>(0);     // placed at offset 0
//   n->fetch_add(1);
//
//   auto mem = tether::Memfd::create(1 << 20);      // nothing named in /dev/shm
//   int fds[] = {mem->fd()};
//   socket.send_fds(std::as_bytes(std::span("m", 1)), fds);  // an unrelated process maps it too
//
// Every segment type is a descriptor (or, for System V, an id) that can be
// mapped any number of times; a Mapping is one mmap(2) (or shmat(2)), owned,
// unmapped once when destroyed, moved freely. Destroy the mappings before the
// segment they came from only if you care: a mapping stays valid after its
// descriptor is closed (mmap(2)), so nothing breaks if you do not.
//
// Space is reserved at creation and on growth (posix_fallocate(3)): a full
// /dev/shm or file system is an ENOSPC error from create() that names the
// object, never a SIGBUS on first touch. A name is made only when asked
// (PosixSharedMemory, MappedFile); Memfd and Mapping::anonymous() name
// nothing, so a crash leaves nothing behind.
//
// Named POSIX segments carry a lease: whoever has one open holds a shared
// flock(2) on it, which the kernel drops when the process dies, however it
// dies. posix_shared_memory_list() says for each of this user's names
// whether anyone still holds it; remove_abandoned_posix_shared_memory()
// removes only the ones tether made that nobody holds.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "tether/sys.hpp"
#include "tether/sys/named.hpp"

namespace tether {

enum class Access : unsigned char { read_only, read_write };

// ---------------------------------------------------------------- Mapping

// One mapping of shared memory, owned: munmap(2) (or shmdt(2) for System V)
// once, when destroyed or unmap() is called. Move-only.
//
// Memory that has held a robust mutex (tether::Mutex, or anything built on
// it) must stay mapped for the life of the process: glibc bug 14485, where
// unmapping right after an unlock races the kernel's handling of a death
// that follows, which may then write into whatever is mapped there next.
// keep_mapped() makes the mapping outlive its owner: it is never unmapped
// (exec and exit still drop it). tether's own sync objects do it for the
// memory they create.
class Mapping {
 public:
  Mapping() noexcept = default;
  Mapping(Mapping&& other) noexcept;
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();

  // mmap(2) MAP_SHARED of `length` bytes of `fd` from `offset` (a multiple
  // of the page size). `what` names the object in errors ("POSIX shared
  // memory /x"). A length past the object's end is refused (EINVAL, "map
  // bytes 0 to 8192 of ...: past its end at 4096"): touching such a page
  // raises SIGBUS.
  static Result<Mapping> map(int fd, std::size_t offset, std::size_t length, Access access,
                             std::string_view what);
  // For an object that grows while mapped: `length` bytes of address space
  // from offset 0, of which only the object's current size may be touched
  // (a page past its end raises SIGBUS). As the object grows (by anyone),
  // the mapping already covers the new bytes: nobody has to map again.
  // The object must hold at least one byte now.
  static Result<Mapping> map_growable(int fd, std::size_t length, Access access,
                                      std::string_view what);
  // Anonymous shared memory (MAP_SHARED|MAP_ANONYMOUS), zero-filled, shared
  // with every child forked after this call, named nowhere. It lives in the
  // kernel's internal tmpfs, which has no size limit, so it cannot SIGBUS
  // for want of space; it counts against memory like any other page.
  static Result<Mapping> anonymous(std::size_t length);

  bool valid() const noexcept { return data_ != nullptr; }
  std::byte* data() const noexcept { return static_cast<std::byte*>(data_); }
  std::size_t size() const noexcept { return size_; }
  std::span<std::byte> bytes() const noexcept { return {data(), size_}; }
  Access access() const noexcept { return access_; }
  // What this maps, as errors name it.
  const std::string& what() const noexcept { return what_; }

  // A T at `offset`, after checking that it fits and is aligned (EINVAL,
  // naming the object, otherwise). Nothing is constructed: the memory is
  // read as it is. T must be trivially copyable or designed to live in
  // shared memory (tether's sync types are).
  template <class T>
  Result<T*> view(std::size_t offset = 0) const {
    if (auto ok = check_place(offset, sizeof(T), alignof(T)); !ok)
      return std::unexpected(ok.error());
    return std::launder(reinterpret_cast<T*>(data() + offset));
  }
  // Constructs a T at `offset` with `args` (placement new) after the same
  // checks, and returns it. Its destructor is never run by the mapping.
  template <class T, class... Args>
  Result<T*> construct_at(std::size_t offset, Args&&... args) const {
    if (auto ok = check_place(offset, sizeof(T), alignof(T)); !ok)
      return std::unexpected(ok.error());
    if (access_ != Access::read_write) return read_only_error();
    return ::new (static_cast<void*>(data() + offset)) T(std::forward<Args>(args)...);
  }
  template <class T, class... Args>
  Result<T*> construct(Args&&... args) const {
    return construct_at<T>(0, std::forward<Args>(args)...);
  }

  // msync(2): writes a file mapping's dirty pages back to the file, and
  // waits for it unless `async`. (Other processes see every write at once,
  // without it: msync is about the file on disk.)
  Result<void> sync(bool async = false) const;
  // Never unmaps (see above). Ownership of the address range is given up.
  void keep_mapped() noexcept { kept_ = true; }
  bool kept_mapped() const noexcept { return kept_; }
  // Unmaps now, reporting the error. Invalid afterwards.
  Result<void> unmap() noexcept;

 private:
  friend class SysvSharedMemory;
  // A Mapping of what mmap(2) returned.
  static Mapping made(void* data, std::size_t length, std::string_view what, Access access);
  Result<void> check_place(std::size_t offset, std::size_t size, std::size_t align) const;
  std::unexpected<Error> read_only_error() const;
  void* data_ = nullptr;
  std::size_t size_ = 0;
  std::string what_;
  Access access_ = Access::read_write;
  bool sysv_ = false;  // shmat: detached with shmdt
  bool kept_ = false;
};

// The system's page size (sysconf(_SC_PAGESIZE)).
std::size_t page_size() noexcept;

// ---------------------------------------------------------------- descriptor-backed segments

namespace detail {
// The lease on a named object's file: a shared flock, waited for at most
// 2 s (EWOULDBLOCK, said so, if someone holds an exclusive lock that long).
Result<void> take_shared_lease(int fd, std::string_view what);
// ENOMEM, naming the object, when growing a tmpfs or memfd file by
// `grow_by` bytes would take more memory than the machine has available.
Result<void> check_tmpfs_room(int fd, std::size_t grow_by, std::string_view what);

// What the three descriptor-backed kinds share: a descriptor for memory of
// some size, which can be mapped, measured and resized.
class MemoryFd {
 public:
  int fd() const noexcept { return fd_.get(); }
  bool valid() const noexcept { return fd_.valid(); }
  // The whole object, or `length` bytes from `offset`.
  Result<Mapping> map(Access access = Access::read_write) const;
  Result<Mapping> map(std::size_t offset, std::size_t length,
                      Access access = Access::read_write) const;
  // Its size now (fstat).
  Result<std::size_t> size() const;
  // Sets its size. Growth is reserved (posix_fallocate): ENOSPC, with the
  // old size kept, when there is no room. Shrinking under a mapping makes
  // the pages past the end raise SIGBUS in whoever touches them: only
  // shrink what nobody maps.
  Result<void> resize(std::size_t size) const;
  // Closes the descriptor, reporting the error (an owner still removes
  // the name when destroyed). Mappings made from it stay valid.
  Result<void> close() noexcept { return fd_.close(); }

 protected:
  MemoryFd() noexcept = default;
  Fd fd_;
  std::string what_;  // "POSIX shared memory /x", for errors
  Access access_ = Access::read_write;
};
}  // namespace detail

// A POSIX shared memory object (shm_open(3)), /dev/shm/NAME.
class PosixSharedMemory : public detail::MemoryFd {
 public:
  PosixSharedMemory() noexcept = default;

  // Creates a new segment of `size` bytes (> 0), reserved, with exactly
  // `mode` whatever the umask. Fails with EEXIST if the name is taken
  // (whoever made it), ENOSPC (and makes nothing) if /dev/shm has no room.
  // Names look like "/counters" (check_posix_ipc_name). We own the name:
  // it is removed when this object is destroyed, if it still holds our
  // segment; release() keeps it.
  static Result<PosixSharedMemory> create(std::string name, std::size_t size, mode_t mode = 0600);
  // Opens an existing segment, without owning it. `min_size` (> 0) fails
  // with EINVAL when the segment is smaller: mapping past its end raises
  // SIGBUS, so the size a reader expects is worth checking.
  static Result<PosixSharedMemory> open(std::string name, Access access = Access::read_write,
                                        std::size_t min_size = 0);

  const std::string& name() const noexcept { return object_.name(); }
  bool owns() const noexcept { return object_.owns(); }
  // Keeps the segment after this object is gone, on purpose: it loses
  // tether's mark too (while the descriptor is open), so that
  // remove_abandoned_posix_shared_memory() leaves it alone.
  void release() noexcept;
  // shm_unlink now, if the name still holds this segment. Mappings stay
  // valid; nobody can open it by name any more.
  Result<void> remove() { return object_.remove(); }

 private:
  NamedObject object_;
};

// One of this user's POSIX shared memory names (posix_shared_memory_list).
struct PosixSegmentInfo {
  std::string name;             // "/counters"
  std::size_t size = 0;         // bytes
  bool made_by_tether = false;  // created by PosixSharedMemory (which marks it)
  bool held = false;            // some live process has it open through tether
};

// This user's POSIX shared memory names (entries of /dev/shm that are
// regular files owned by the effective user), with whether each is held.
// glibc's named semaphores ("sem.*") are listed too, under "/sem.NAME".
// A segment made by another library holds no lease and shows held = false,
// whether it is used or not: only made_by_tether ones can be judged.
Result<std::vector<PosixSegmentInfo>> posix_shared_memory_list();
// Removes this user's segments that tether made and that no process holds
// (their owner died without removing them), whose names start with
// `prefix` ("" for all). A segment somebody holds is never removed, nor one
// another library made. Returns the names removed.
Result<std::vector<std::string>> remove_abandoned_posix_shared_memory(std::string_view prefix = "");

// Anonymous memory from memfd_create(2): close-on-exec, sealable, named
// nowhere (the name given shows only in /proc/PID/fd and /proc/PID/maps).
// Shared with fork children through their inherited descriptor or
// mappings, and with unrelated processes by passing fd() over a Unix socket
// (Socket::send_fds); they adopt it with from_fd().
class Memfd : public detail::MemoryFd {
 public:
  Memfd() noexcept = default;
  // `size` bytes (> 0), reserved (ENOSPC / ENOMEM when there is no room).
  static Result<Memfd> create(std::size_t size, std::string_view debug_name = "tether");
  // Adopts a descriptor (received from another process, say). Anything but
  // a memfd is refused (EINVAL): a FIFO or a file handed over where memory
  // was expected. `min_size` as for PosixSharedMemory::open.
  static Result<Memfd> from_fd(Fd fd, std::size_t min_size = 0);

  // F_ADD_SEALS (memfd_create(2)): F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE,
  // F_SEAL_SEAL. A receiver that must not see the size change under it asks
  // for seals() & F_SEAL_SHRINK.
  Result<void> add_seals(int seals) const;
  Result<int> seals() const;
};

// A regular file mapped shared by several processes (the reference
// material's mmap example). Writes are seen by every process at once;
// Mapping::sync() puts them on disk.
class MappedFile : public detail::MemoryFd {
 public:
  MappedFile() noexcept = default;
  // Creates a new file (EEXIST if the path exists; symlinks are not
  // followed) of `size` bytes (> 0), reserved, exactly `mode`. We own the
  // path: it is removed when this object is destroyed if it still holds
  // our file; release() keeps it (the usual case for a data file).
  static Result<MappedFile> create(std::filesystem::path path, std::size_t size,
                                   mode_t mode = 0600);
  // Opens an existing regular file, without owning it: a symbolic link is
  // ELOOP, a directory EISDIR (read_write) and a FIFO, socket or device
  // EINVAL, each said so. With `grow_to` and read_write
  // access, a smaller file is grown to that size first (reserved).
  static Result<MappedFile> open(std::filesystem::path path, Access access = Access::read_write,
                                 std::size_t grow_to = 0);

  const std::string& path() const noexcept { return object_.name(); }
  bool owns() const noexcept { return object_.owns(); }
  void release() noexcept { object_.release(); }
  Result<void> remove() { return object_.remove(); }

 private:
  NamedObject object_;
};

// ---------------------------------------------------------------- System V

// A System V shared memory segment (shmget(2)). IPC_RMID (remove()) is
// deferred by the kernel until the last process detaches: the segment
// lives on, unreachable by key, while anyone has it attached.
class SysvSharedMemory {
 public:
  struct Stats {
    std::size_t size = 0;         // shm_segsz
    std::size_t attachments = 0;  // shm_nattch: processes attached now
    pid_t creator = 0;            // shm_cpid
    pid_t last = 0;               // shm_lpid: last to attach or detach
    uid_t owner = 0;              // shm_perm.uid
    mode_t mode = 0;              // permission bits
    bool removed = false;         // IPC_RMID done, waiting for the last detach
  };

  static constexpr SysvKey private_key = SysvKey::private_key();

  SysvSharedMemory() noexcept = default;

  // A new segment of `size` bytes (> 0) (IPC_CREAT|IPC_EXCL: EEXIST if the
  // key is taken), with exactly `mode`. Beyond /proc/sys/kernel/shmmax is
  // EINVAL, past shmall or shmmni ENOSPC, both said so. We own it: removed
  // (IPC_RMID) when destroyed.
  static Result<SysvSharedMemory> create(SysvKey key, std::size_t size, mode_t mode = 0600);
  // An existing segment by key, without owning it. `size` (> 0) must match
  // the segment's size exactly, or the error says what it is (EINVAL).
  static Result<SysvSharedMemory> open(SysvKey key, std::size_t size = 0);
  // By the id shmget returned (an IPC_PRIVATE segment has no other name).
  static Result<SysvSharedMemory> from_id(int id);

  // shmat(2): attaches the whole segment. Detached when the Mapping goes.
  Result<Mapping> attach(Access access = Access::read_write) const;
  Result<Stats> stats() const;
  int id() const noexcept { return object_.id(); }
  std::size_t size() const noexcept { return size_; }
  bool valid() const noexcept { return object_.valid(); }
  bool owns() const noexcept { return object_.owns(); }
  void release() noexcept { object_.release(); }
  Result<void> remove() { return object_.remove(); }

 private:
  NamedObject object_;
  std::size_t size_ = 0;
};

}  // namespace tether
