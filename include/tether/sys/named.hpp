// tether/sys/named.hpp — named kernel objects: who owns one, POSIX IPC names,
// System V keys.
//
//   auto fifo = tether::Fifo::create("/run/user/1000/app.fifo");  // owns() is true
//   fifo->release();        // keep it on disk after we are gone
//   fifo->remove();         // or remove it now, if the path still holds it
//
// Every creator of a named object (Fifo, UnixListener's socket file,
// PosixQueue, SysvQueue, and next shared memory and semaphores) holds a
// NamedObject: what it made (a path with the file's device, inode, type
// and owner; a POSIX IPC name with its inode; a System V id with its key and
// creator), and whether it still owns it. The owner removes the object when
// destroyed, and only if the name still holds that very object: a path that
// now holds another file (the FIFO was removed and something else made in
// its place, which may even reuse the inode number), a POSIX name re-created,
// a System V id that now names another object, is left alone. Every owner
// offers the same three calls: owns(), release(), remove().
#pragma once

#include <sys/ipc.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "tether/sys.hpp"

namespace tether {

// ---------------------------------------------------------------- POSIX names

// A POSIX IPC name (mq_open, shm_open, sem_open): one leading slash, then 1
// to NAME_MAX - 1 bytes with no other slash and no NUL, and not "/." or
// "/..". `what` names the kind of object in the error: "POSIX queue name
// 'jobs': must be '/' followed by 1 to 254 bytes, no other '/' (EINVAL)".
Result<void> check_posix_ipc_name(std::string_view name, std::string_view what);

// ---------------------------------------------------------------- System V keys

// The key of a System V object (msgget, shmget, semget). A key_t does not
// say whether 0 was meant: 0 is IPC_PRIVATE, which names nothing (every
// msgget(IPC_PRIVATE) makes a new object), so two processes that both "use
// key 0" never meet. This type is made only on purpose: from a path, from a
// number that is a real key, or explicitly private.
class SysvKey {
 public:
  // ftok(3): a key from an existing path and a project id (1..255).
  static Result<SysvKey> from_path(const std::filesystem::path& path, int project_id);
  // 1 to 0xffffffff (the upper half are the negative key_t values ftok also
  // makes, which are accepted as such). 0 (IPC_PRIVATE) and anything wider
  // than 32 bits are refused (EINVAL): they used to become IPC_PRIVATE.
  static Result<SysvKey> from_number(long long value);
  // A number as text: decimal or 0x hex, no sign ("12", "0x7e001234").
  static Result<SysvKey> parse(std::string_view text);
  // IPC_PRIVATE: a new object that no other process can find by key (hand
  // them its id instead).
  static constexpr SysvKey private_key() noexcept { return SysvKey(IPC_PRIVATE); }

  constexpr key_t get() const noexcept { return key_; }
  constexpr bool is_private() const noexcept { return key_ == IPC_PRIVATE; }
  // "0x7e001234", or "IPC_PRIVATE".
  std::string describe() const;
  friend constexpr bool operator==(SysvKey, SysvKey) noexcept = default;

 private:
  constexpr explicit SysvKey(key_t key) noexcept : key_(key) {}
  key_t key_;
};

// ---------------------------------------------------------------- ownership

// A named object, and whether we own it (see the top of this file).
// Move-only: a move hands the ownership over; the moved-from one holds
// nothing. Destroying an owner removes the object (errors are ignored:
// call remove() to see them).
class NamedObject {
 public:
  enum class Kind : unsigned char {
    none,
    file,                 // a path: FIFO, socket file, directory, ...
    posix_queue,          // mq_open name
    posix_shared_memory,  // shm_open name
    posix_semaphore,      // sem_open name
    sysv_queue,           // msgget id
    sysv_shared_memory,   // shmget id
    sysv_semaphores,      // semget id
  };

  NamedObject() noexcept = default;
  NamedObject(NamedObject&& other) noexcept;
  NamedObject& operator=(NamedObject&& other) noexcept;
  NamedObject(const NamedObject&) = delete;
  NamedObject& operator=(const NamedObject&) = delete;
  ~NamedObject();

  // The file at `path`, as fstat/lstat described it (`st`): recognised
  // later by device, inode, type and owner.
  static NamedObject file(std::string path, const struct stat& st, bool owned);
  // A POSIX IPC name; `fd` (the object's open descriptor, -1 if none) gives
  // its inode, by which it is recognised later.
  static NamedObject posix(Kind kind, std::string name, int fd, bool owned);
  // A System V object by id; with its key, it is recognised later by key
  // and creator (an id is reused only after its slot wrapped around).
  static NamedObject sysv(Kind kind, int id, std::optional<SysvKey> key, bool owned);

  bool valid() const noexcept { return kind_ != Kind::none; }
  Kind kind() const noexcept { return kind_; }
  // The path or POSIX name ("" for System V objects).
  const std::string& name() const noexcept { return name_; }
  // The System V id (-1 for the others).
  int id() const noexcept { return id_; }
  // "FIFO /run/x", "socket file /run/x.sock", "POSIX queue /jobs", "System V queue 32769".
  std::string describe() const;

  // True while this object will remove it when destroyed.
  bool owns() const noexcept { return owned_; }
  // Keeps the object after we are gone (ownership ends; nothing is removed).
  void release() noexcept { owned_ = false; }
  // Removes it now, if the name still holds this very object; otherwise
  // fails (EEXIST, "...: the path now holds another file; left alone") and
  // removes nothing. Ownership ends either way. Works on objects that were
  // opened, not created, too: removing is then the caller's explicit wish.
  Result<void> remove();

 private:
  Result<void> remove_file();
  Result<void> remove_posix();
  Result<void> remove_sysv();

  std::string name_;
  int id_ = -1;
  key_t key_ = 0;
  bool key_known_ = false;
  bool identity_ = false;  // dev_/ino_/type_ are known
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  mode_t type_ = 0;
  uid_t uid_ = 0;
  // The directory that holds a file, as it was at creation: removal
  // happens through it (unlinkat), so a directory swapped for a symbolic
  // link after creation cannot lead the unlink elsewhere.
  bool parent_known_ = false;
  dev_t parent_dev_ = 0;
  ino_t parent_ino_ = 0;
  Kind kind_ = Kind::none;
  bool owned_ = false;
};

}  // namespace tether
