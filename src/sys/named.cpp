#include "tether/sys/named.hpp"

#include <fcntl.h>
#include <limits.h>
#include <mqueue.h>
#include <semaphore.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

#include <charconv>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

namespace tether {

// ---------------------------------------------------------------- POSIX names

Result<void> check_posix_ipc_name(std::string_view name, std::string_view what) {
  // mq_open(3)/shm_overview(7): "/somename", at most NAME_MAX characters in
  // all. A NUL would cut the name short where the kernel reads it; "." and
  // ".." name directories of the file system that backs the names.
  std::string_view rest = name.substr(name.empty() ? 0 : 1);
  if (name.size() < 2 || name.size() > NAME_MAX || name[0] != '/' ||
      rest.find('/') != std::string_view::npos || rest.find('\0') != std::string_view::npos ||
      rest == "." || rest == "..") {
    return fail(EINVAL, fmt::format("{} name '{}': must be '/' followed by 1 to {} bytes, no other "
                                    "'/' (and not . or ..)",
                                    what, name, NAME_MAX - 1));
  }
  return {};
}

// ---------------------------------------------------------------- System V keys

Result<SysvKey> SysvKey::from_path(const std::filesystem::path& path, int project_id) {
  if (project_id < 1 || project_id > 255) {
    return fail(EINVAL, fmt::format("System V key from {}: project id {} is not in 1..255",
                                    path.string(), project_id));
  }
  // ftok returns -1 on failure, and -1 (0xffffffff) is also a key it can
  // make (project 0xff, device and inode bits all ones): errno tells them apart.
  errno = 0;
  key_t key = ::ftok(path.c_str(), project_id);
  if (key == -1 && errno != 0) return fail(errno, "System V key from " + path.string());
  return SysvKey(key);  // never 0: the project id fills the top byte
}

Result<SysvKey> SysvKey::from_number(long long value) {
  if (value == 0) {
    return fail(EINVAL,
                "System V key 0 is IPC_PRIVATE, which names no object: each side would get a new "
                "one of its own (use a key from 1 to 0xffffffff, a path, or "
                "SysvKey::private_key() for a private object)");
  }
  if (value < std::numeric_limits<std::int32_t>::min() ||
      value > static_cast<long long>(std::numeric_limits<std::uint32_t>::max())) {
    return fail(EINVAL, fmt::format("System V key {}: the key does not fit 32 bits (at most "
                                    "4294967295, 0xffffffff)",
                                    value));
  }
  // The upper half of the 32 bits are the negative key_t values.
  return SysvKey(value < 0 ? static_cast<key_t>(value)
                           : static_cast<key_t>(static_cast<std::uint32_t>(value)));
}

Result<SysvKey> SysvKey::parse(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return fail(EINVAL, fmt::format("System V key '{}': {}", text, why));
  };
  if (text.starts_with('-') || text.starts_with('+')) return bad("a key has no sign");
  bool hex = text.starts_with("0x") || text.starts_with("0X");
  std::string_view digits = text.substr(hex ? 2 : 0);
  std::uint64_t value = 0;
  auto [end, ec] =
      std::from_chars(digits.data(), digits.data() + digits.size(), value, hex ? 16 : 10);
  if (digits.empty() || end != digits.data() + digits.size() ||
      (ec != std::errc() && ec != std::errc::result_out_of_range)) {
    return bad("the key must be a number (12, 0x1f) or a path");
  }
  // Wider than 32 bits used to be cut to its low bits (4294967296 became 0):
  // refused, not wrapped.
  if (ec == std::errc::result_out_of_range || value > 0xffffffffu)
    return bad("the key does not fit 32 bits (at most 4294967295, 0xffffffff)");
  return from_number(static_cast<long long>(value));
}

std::string SysvKey::describe() const {
  if (is_private()) return "IPC_PRIVATE";
  return fmt::format("{:#x}", static_cast<std::uint32_t>(key_));
}

// ---------------------------------------------------------------- NamedObject

NamedObject::NamedObject(NamedObject&& other) noexcept
    : name_(std::move(other.name_)),
      id_(std::exchange(other.id_, -1)),
      key_(other.key_),
      key_known_(other.key_known_),
      identity_(other.identity_),
      dev_(other.dev_),
      ino_(other.ino_),
      type_(other.type_),
      uid_(other.uid_),
      parent_known_(other.parent_known_),
      parent_dev_(other.parent_dev_),
      parent_ino_(other.parent_ino_),
      kind_(std::exchange(other.kind_, Kind::none)),
      owned_(std::exchange(other.owned_, false)) {}

NamedObject& NamedObject::operator=(NamedObject&& other) noexcept {
  if (this != &other) {
    if (owned_) (void)remove();
    name_ = std::move(other.name_);
    id_ = std::exchange(other.id_, -1);
    key_ = other.key_;
    key_known_ = other.key_known_;
    identity_ = other.identity_;
    dev_ = other.dev_;
    ino_ = other.ino_;
    type_ = other.type_;
    uid_ = other.uid_;
    parent_known_ = other.parent_known_;
    parent_dev_ = other.parent_dev_;
    parent_ino_ = other.parent_ino_;
    kind_ = std::exchange(other.kind_, Kind::none);
    owned_ = std::exchange(other.owned_, false);
  }
  return *this;
}

NamedObject::~NamedObject() {
  if (owned_) (void)remove();
}

namespace {

// "/a/b/c" -> "/a/b" and "c"; "c" -> "." and "c"; "/c" -> "/" and "c".
std::string trimmed(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}
std::string parent_of(const std::string& full) {
  std::string path = trimmed(full);
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}
std::string base_of(const std::string& full) {
  std::string path = trimmed(full);
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

NamedObject NamedObject::file(std::string path, const struct stat& st, bool owned) {
  NamedObject o;
  o.kind_ = Kind::file;
  o.name_ = std::move(path);
  o.identity_ = true;
  o.dev_ = st.st_dev;
  o.ino_ = st.st_ino;
  o.type_ = st.st_mode & S_IFMT;
  o.uid_ = st.st_uid;
  o.owned_ = owned;
  struct stat parent {};
  if (::stat(parent_of(o.name_).c_str(), &parent) == 0) {
    o.parent_known_ = true;
    o.parent_dev_ = parent.st_dev;
    o.parent_ino_ = parent.st_ino;
  }
  return o;
}

NamedObject NamedObject::posix(Kind kind, std::string name, int fd, bool owned) {
  NamedObject o;
  o.kind_ = kind;
  o.name_ = std::move(name);
  struct stat st {};
  if (fd >= 0 && ::fstat(fd, &st) == 0) {
    o.identity_ = true;
    o.dev_ = st.st_dev;
    o.ino_ = st.st_ino;
    o.uid_ = st.st_uid;
  }
  o.owned_ = owned;
  return o;
}

NamedObject NamedObject::sysv(Kind kind, int id, std::optional<SysvKey> key, bool owned) {
  NamedObject o;
  o.kind_ = kind;
  o.id_ = id;
  if (key) {
    o.key_known_ = true;
    o.key_ = key->get();
  }
  o.uid_ = ::geteuid();
  o.owned_ = owned;
  return o;
}

namespace {

std::string_view file_kind(mode_t type) {
  switch (type) {
    case S_IFIFO:
      return "FIFO";
    case S_IFSOCK:
      return "socket file";
    case S_IFDIR:
      return "directory";
    case S_IFREG:
      return "file";
    default:
      return "path";
  }
}

}  // namespace

std::string NamedObject::describe() const {
  switch (kind_) {
    case Kind::none:
      return "no object";
    case Kind::file:
      return fmt::format("{} {}", file_kind(type_), name_);
    case Kind::posix_queue:
      return "POSIX queue " + name_;
    case Kind::posix_shared_memory:
      return "POSIX shared memory " + name_;
    case Kind::posix_semaphore:
      return "POSIX semaphore " + name_;
    case Kind::sysv_queue:
      return fmt::format("System V queue {}", id_);
    case Kind::sysv_shared_memory:
      return fmt::format("System V shared memory {}", id_);
    case Kind::sysv_semaphores:
      return fmt::format("System V semaphore set {}", id_);
  }
  return "object";
}

Result<void> NamedObject::remove() {
  owned_ = false;
  switch (kind_) {
    case Kind::none:
      return fail(EBADF, "remove a named object: there is none (moved from, or never made)");
    case Kind::file:
      return remove_file();
    case Kind::posix_queue:
    case Kind::posix_shared_memory:
    case Kind::posix_semaphore:
      return remove_posix();
    case Kind::sysv_queue:
    case Kind::sysv_shared_memory:
    case Kind::sysv_semaphores:
      return remove_sysv();
  }
  return {};
}

Result<void> NamedObject::remove_file() {
  std::string what = "remove " + describe();
  // Through the directory that held the file at creation, checked to be
  // that very directory: a path re-resolved at removal could pass through
  // a directory another user replaced with a symbolic link meanwhile.
  int dfd = ::open(parent_of(name_).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return fail(errno, what);
  struct DirFd {
    int fd;
    ~DirFd() { ::close(fd); }
  } dir{dfd};
  struct stat parent {};
  if (::fstat(dfd, &parent) != 0) return fail(errno, what);
  if (parent_known_ && (parent.st_dev != parent_dev_ || parent.st_ino != parent_ino_))
    return fail(EEXIST, what + ": its directory was replaced; left alone");
  std::string base = base_of(name_);
  struct stat st {};
  if (::fstatat(dfd, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return fail(errno, what);
  // Inode numbers are reused at once (a file made right after ours was
  // deleted may get the same one), so the type and owner must match too.
  if (st.st_dev != dev_ || st.st_ino != ino_ || (st.st_mode & S_IFMT) != type_ ||
      st.st_uid != uid_) {
    return fail(EEXIST, what + ": the path now holds another file; left alone");
  }
  if (::unlinkat(dfd, base.c_str(), type_ == S_IFDIR ? AT_REMOVEDIR : 0) != 0)
    return fail(errno, what);
  return {};
}

Result<void> NamedObject::remove_posix() {
  std::string what = "remove " + describe();
  bool queue = kind_ == Kind::posix_queue;
  bool semaphore = kind_ == Kind::posix_semaphore;
  // glibc keeps a named semaphore in /dev/shm/sem.NAME (sem_open(3)).
  std::string sem_file = semaphore ? "/dev/shm/sem." + name_.substr(1) : std::string();
  if (identity_) {
    // The name leads to an inode only through an open: open it (for
    // reading, else for writing: whichever the mode lets us) and compare.
    // When neither is allowed the identity cannot be proved, and the name is
    // removed as before: the directories behind these names (/dev/mqueue,
    // /dev/shm) are sticky, so only our own user can have replaced it.
    int fd = -1;
    for (int flags : {O_RDONLY, queue ? O_WRONLY : O_RDWR}) {
      fd = queue       ? static_cast<int>(::mq_open(name_.c_str(), flags | O_CLOEXEC | O_NONBLOCK))
           : semaphore ? ::open(sem_file.c_str(), flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
                       : ::shm_open(name_.c_str(), flags | O_CLOEXEC | O_NONBLOCK, 0);
      if (fd >= 0 || errno != EACCES) break;
    }
    if (fd < 0 && errno != EACCES) return fail(errno, what);
    if (fd >= 0) {
      struct stat st {};
      bool same = ::fstat(fd, &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_;
      ::close(fd);  // mq_close(3) is close(2) on Linux
      if (!same) return fail(EEXIST, what + ": the name now holds another object; left alone");
    }
  }
  int r = queue       ? ::mq_unlink(name_.c_str())
          : semaphore ? ::sem_unlink(name_.c_str())
                      : ::shm_unlink(name_.c_str());
  if (r != 0) return fail(errno, what);
  return {};
}

Result<void> NamedObject::remove_sysv() {
  std::string what = "remove " + describe();
  if (key_known_) {
    // An id is reused only once its slot's sequence number wraps, but then
    // it names someone else's object: the key and creator must match.
    key_t key = 0;
    uid_t creator = 0;
    int r = -1;
    if (kind_ == Kind::sysv_queue) {
      msqid_ds ds{};
      r = ::msgctl(id_, IPC_STAT, &ds);
      key = ds.msg_perm.__key, creator = ds.msg_perm.cuid;
    } else if (kind_ == Kind::sysv_shared_memory) {
      shmid_ds ds{};
      r = ::shmctl(id_, IPC_STAT, &ds);
      key = ds.shm_perm.__key, creator = ds.shm_perm.cuid;
    } else {
      semid_ds ds{};
      r = ::semctl(id_, 0, IPC_STAT, &ds);
      key = ds.sem_perm.__key, creator = ds.sem_perm.cuid;
    }
    if (r != 0) return fail(errno, what);
    if (key != key_ || creator != uid_)
      return fail(EEXIST, what + ": the id now names another object; left alone");
  }
  int r = kind_ == Kind::sysv_queue           ? ::msgctl(id_, IPC_RMID, nullptr)
          : kind_ == Kind::sysv_shared_memory ? ::shmctl(id_, IPC_RMID, nullptr)
                                              : ::semctl(id_, 0, IPC_RMID);
  if (r != 0) return fail(errno, what);
  return {};
}

}  // namespace tether
