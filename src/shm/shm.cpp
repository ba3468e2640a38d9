#include "tether/shm.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "tether/sys/backoff.hpp"

namespace tether {

namespace {

// glibc's shm_open(3) puts every name in this directory (sysdeps/posix/
// shm-directory.h); named semaphores are "sem.NAME" files beside them.
constexpr const char* kShmDir = "/dev/shm";

// The mark of a segment made by PosixSharedMemory::create: the sticky bit,
// which means nothing on a regular file to Linux (chmod(2)) and which no
// other library sets. It is set only after the creator holds its lease, so
// an unleased segment with the mark is always an abandoned one.
constexpr mode_t kTetherMark = S_ISVTX;

// posix_fallocate returns the error instead of setting errno.
Result<void> reserve(int fd, std::size_t size, std::string_view what) {
  if (size > static_cast<std::size_t>(std::numeric_limits<off_t>::max()))
    return fail(EFBIG, fmt::format("reserve {} bytes for {}: too large", size, what));
  struct stat st {};
  std::size_t now = ::fstat(fd, &st) == 0 ? static_cast<std::size_t>(st.st_size) : 0;
  struct statvfs vfs {};
  if (::fstatvfs(fd, &vfs) == 0 && vfs.f_blocks != 0 &&
      size > static_cast<std::size_t>(vfs.f_blocks) * vfs.f_frsize) {
    // Larger than the whole file system: the kernel says ENOSPC at once.
  } else if (size > now) {
    if (auto ok = detail::check_tmpfs_room(fd, size - now, what); !ok) return ok;
  }
  int err = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
  while (err == EINTR) err = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
  if (err == ENOSPC) {
    return fail(err, fmt::format("reserve {} bytes for {}: no space left on its file system "
                                 "(nothing was made; a smaller size or more room is needed)",
                                 size, what));
  }
  if (err != 0) return fail(err, fmt::format("reserve {} bytes for {}", size, what));
  return {};
}

Result<std::size_t> fd_size(int fd, std::string_view what) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(errno, fmt::format("size of {}", what));
  return static_cast<std::size_t>(st.st_size);
}

Result<void> check_size(std::size_t size, std::string_view op) {
  if (size == 0) return fail(EINVAL, fmt::format("{}: the size must be at least one byte", op));
  return {};
}

// The lease (detail::take_shared_lease): a shared flock, dropped by the
// kernel when the last descriptor of this open file description closes,
// which a death does.
}  // namespace

Result<void> detail::take_shared_lease(int fd, std::string_view what) {
  // Not blocking for ever: anyone who can read the file can flock it, and
  // an exclusive lock held by someone else (a reader, flock(1)) would
  // otherwise hang this open. The cleaner holds its lock for microseconds.
  Backoff backoff(std::chrono::microseconds(100), std::chrono::milliseconds(20));
  Deadline give_up(std::chrono::seconds(2));
  for (;;) {
    if (retry_eintr([&] { return ::flock(fd, LOCK_SH | LOCK_NB); }) == 0) return {};
    if (errno != EWOULDBLOCK) return fail(errno, fmt::format("take the lease on {}", what));
    if (!backoff.wait(give_up)) {
      return fail(EWOULDBLOCK, fmt::format("take the lease on {}: another process holds an "
                                           "exclusive lock on it (flock) and kept it for 2 s",
                                           what));
    }
  }
}

Result<void> detail::check_tmpfs_room(int fd, std::size_t grow_by, std::string_view what) {
  // Pages of tmpfs and memfd are memory: reserving more than there is
  // makes the kernel kill processes (the OOM killer) rather than fail, and
  // /dev/shm's own limit is often the size of RAM. So look first: the
  // memory available (MemAvailable + SwapFree, /proc/meminfo) and, in a
  // cgroup v2 with a limit, the room left under it.
  struct statfs fs {};
  if (::fstatfs(fd, &fs) != 0 || fs.f_type != TMPFS_MAGIC) return {};
  auto meminfo = [](const char* key) -> std::uint64_t {
    FILE* f = std::fopen("/proc/meminfo", "re");
    if (f == nullptr) return 0;
    char line[128];
    std::uint64_t kib = 0;
    std::size_t n = std::strlen(key);
    while (std::fgets(line, sizeof line, f) != nullptr) {
      if (std::strncmp(line, key, n) == 0 && line[n] == ':') {
        kib = std::strtoull(line + n + 1, nullptr, 10);
        break;
      }
    }
    std::fclose(f);
    return kib * 1024;
  };
  std::uint64_t room = meminfo("MemAvailable") + meminfo("SwapFree");
  if (room == 0) return {};  // cannot tell
  if (grow_by > room) {
    return fail(ENOMEM, fmt::format("reserve {} bytes for {}: more than the memory available "
                                    "({} bytes); nothing was made",
                                    grow_by, what, room));
  }
  return {};
}

namespace {

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

}  // namespace

std::size_t page_size() noexcept {
  static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

// ---------------------------------------------------------------- Mapping

Mapping::Mapping(Mapping&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      what_(std::move(other.what_)),
      access_(other.access_),
      sysv_(other.sysv_),
      kept_(std::exchange(other.kept_, false)) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    (void)unmap();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    what_ = std::move(other.what_);
    access_ = other.access_;
    sysv_ = other.sysv_;
    kept_ = std::exchange(other.kept_, false);
  }
  return *this;
}

Mapping::~Mapping() {
  (void)unmap();
}

Result<void> Mapping::unmap() noexcept {
  if (data_ == nullptr) return {};
  void* data = std::exchange(data_, nullptr);
  std::size_t size = std::exchange(size_, 0);
  if (kept_) return {};  // glibc bug 14485: see the header
  int r = sysv_ ? ::shmdt(data) : ::munmap(data, size);
  if (r != 0) return fail(errno, "unmap " + what_);
  return {};
}

Mapping Mapping::made(void* data, std::size_t length, std::string_view what, Access access) {
  Mapping m;
  m.data_ = data;
  m.size_ = length;
  m.what_ = std::string(what);
  m.access_ = access;
  return m;
}

Result<Mapping> Mapping::map(int fd, std::size_t offset, std::size_t length, Access access,
                             std::string_view what) {
  std::string op = offset > std::numeric_limits<std::size_t>::max() - length
                       ? fmt::format("map {} bytes at offset {} of {}", length, offset, what)
                       : fmt::format("map bytes {} to {} of {}", offset, offset + length, what);
  if (length == 0) return fail(EINVAL, op + ": the length must be at least one byte");
  if (offset % page_size() != 0)
    return fail(EINVAL, fmt::format("{}: the offset must be a multiple of the page size ({})", op,
                                    page_size()));
  if (offset > std::numeric_limits<std::size_t>::max() - length)
    return fail(EOVERFLOW, op + ": the range wraps around");
  // Pages past the object's end raise SIGBUS when touched: refuse them now.
  auto size = fd_size(fd, what);
  if (!size) return std::unexpected(size.error());
  if (offset + length > *size)
    return fail(EINVAL, fmt::format("{}: past its end at {}", op, *size));
  int prot = access == Access::read_write ? PROT_READ | PROT_WRITE : PROT_READ;
  void* p = ::mmap(nullptr, length, prot, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) return fail(errno, op);
  return Mapping::made(p, length, what, access);
}

Result<Mapping> Mapping::map_growable(int fd, std::size_t length, Access access,
                                      std::string_view what) {
  std::string op = fmt::format("map {} bytes of address space for {}", length, what);
  if (length == 0) return fail(EINVAL, op + ": the length must be at least one byte");
  auto size = fd_size(fd, what);
  if (!size) return std::unexpected(size.error());
  if (*size == 0) return fail(EINVAL, op + ": it is empty");
  int prot = access == Access::read_write ? PROT_READ | PROT_WRITE : PROT_READ;
  void* p = ::mmap(nullptr, length, prot, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) return fail(errno, op);
  return Mapping::made(p, length, what, access);
}

Result<Mapping> Mapping::anonymous(std::size_t length) {
  std::string what = fmt::format("anonymous shared memory of {} bytes", length);
  if (auto ok = check_size(length, "map " + what); !ok) return std::unexpected(ok.error());
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return fail(errno, "map " + what);
  Mapping m;
  m.data_ = p;
  m.size_ = length;
  m.what_ = std::move(what);
  return m;
}

Result<void> Mapping::check_place(std::size_t offset, std::size_t size, std::size_t align) const {
  if (data_ == nullptr)
    return fail(EINVAL, "place an object in a mapping: there is none (moved from)");
  if (offset > size_ || size > size_ - offset) {
    return fail(EINVAL, fmt::format("place {} bytes at offset {} of {}: past its end at {}", size,
                                    offset, what_, size_));
  }
  if ((reinterpret_cast<std::uintptr_t>(data()) + offset) % align != 0) {
    return fail(EINVAL, fmt::format("place an object at offset {} of {}: not aligned to {} bytes",
                                    offset, what_, align));
  }
  return {};
}

std::unexpected<Error> Mapping::read_only_error() const {
  return fail(EACCES, "construct an object in " + what_ + ": the mapping is read-only");
}

Result<void> Mapping::sync(bool async) const {
  if (data_ == nullptr) return fail(EINVAL, "sync a mapping: there is none (moved from)");
  if (sysv_) return {};  // nothing behind it but memory
  if (::msync(data_, size_, async ? MS_ASYNC : MS_SYNC) != 0) return fail(errno, "sync " + what_);
  return {};
}

// ---------------------------------------------------------------- MemoryFd

namespace detail {

Result<Mapping> MemoryFd::map(Access access) const {
  auto size = this->size();
  if (!size) return std::unexpected(size.error());
  return map(0, *size, access);
}

Result<Mapping> MemoryFd::map(std::size_t offset, std::size_t length, Access access) const {
  if (!fd_) return fail(EBADF, "map shared memory: none open (moved from or closed)");
  if (access == Access::read_write && access_ == Access::read_only)
    return fail(EACCES, "map " + what_ + " for writing: it was opened read-only");
  return Mapping::map(fd_.get(), offset, length, access, what_);
}

Result<std::size_t> MemoryFd::size() const {
  if (!fd_) return fail(EBADF, "size of shared memory: none open (moved from or closed)");
  return fd_size(fd_.get(), what_);
}

Result<void> MemoryFd::resize(std::size_t size) const {
  std::string op = fmt::format("resize {} to {} bytes", what_, size);
  if (auto ok = check_size(size, op); !ok) return std::unexpected(ok.error());
  if (access_ == Access::read_only) return fail(EBADF, op + ": it was opened read-only");
  auto now = this->size();
  if (!now) return std::unexpected(now.error());
  if (size > *now) return reserve(fd_.get(), size, what_);
  if (size < *now &&
      retry_eintr([&] { return ::ftruncate(fd_.get(), static_cast<off_t>(size)); }) != 0)
    return fail(errno, op);
  return {};
}

}  // namespace detail

// ---------------------------------------------------------------- POSIX

Result<PosixSharedMemory> PosixSharedMemory::create(std::string name, std::size_t size,
                                                    mode_t mode) {
  if (auto ok = check_posix_ipc_name(name, "POSIX shared memory"); !ok)
    return std::unexpected(ok.error());
  std::string what = "POSIX shared memory " + name;
  if (auto ok = check_size(size, "create " + what); !ok) return std::unexpected(ok.error());
  mode &= 0777;
  int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    int err = errno;
    if (err == EEXIST) return fail(err, "create " + what + ": the name is taken");
    return fail(err, "create " + what);
  }
  PosixSharedMemory s;
  s.fd_.reset(fd);
  s.what_ = what;
  // Owned from here on: any failure below removes the name again.
  s.object_ = NamedObject::posix(NamedObject::Kind::posix_shared_memory, std::move(name), fd, true);
  // The lease before the mark: see kTetherMark.
  if (auto ok = detail::take_shared_lease(fd, what); !ok) return std::unexpected(ok.error());
  // shm_open applies the umask: set exactly the mode asked, plus the mark.
  if (::fchmod(fd, mode | kTetherMark) != 0) return fail(errno, "set mode of " + what);
  if (auto ok = reserve(fd, size, what); !ok) return std::unexpected(ok.error());
  return s;
}

void PosixSharedMemory::release() noexcept {
  object_.release();
  struct stat st {};
  if (fd_ && ::fstat(fd_.get(), &st) == 0 && (st.st_mode & kTetherMark) != 0)
    (void)::fchmod(fd_.get(), st.st_mode & 0777);
}

Result<PosixSharedMemory> PosixSharedMemory::open(std::string name, Access access,
                                                  std::size_t min_size) {
  if (auto ok = check_posix_ipc_name(name, "POSIX shared memory"); !ok)
    return std::unexpected(ok.error());
  std::string what = "POSIX shared memory " + name;
  // O_NONBLOCK: a FIFO planted in /dev/shm must not block the open (it is
  // refused below); on a regular file the flag means nothing.
  int flags = (access == Access::read_write ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_CLOEXEC;
  int fd = ::shm_open(name.c_str(), flags, 0);
  if (fd < 0) {
    int err = errno;
    if (err == EISDIR || err == ENXIO || err == EINVAL)  // a directory, a socket
      return fail(EINVAL,
                  "open " + what + ": it is not a shared memory object (not a regular file)");
    return fail(err, "open " + what);
  }
  PosixSharedMemory s;
  s.fd_.reset(fd);
  s.what_ = what;
  s.access_ = access;
  if (auto ok = detail::take_shared_lease(fd, what); !ok) return std::unexpected(ok.error());
  // A cleaner may have judged it abandoned and removed it between our open
  // and our lease: then we hold a segment nobody else can reach.
  struct stat mine {
  }, named{};
  std::string path = kShmDir + name;
  if (::fstat(fd, &mine) != 0) return fail(errno, "open " + what);
  if (!S_ISREG(mine.st_mode))  // a FIFO planted in /dev/shm, say
    return fail(EINVAL, "open " + what + ": it is not a shared memory object (not a regular file)");
  if (::lstat(path.c_str(), &named) != 0 || !same_file(mine, named))
    return fail(ENOENT, "open " + what + ": it was removed (as abandoned) while being opened");
  if (min_size > 0 && static_cast<std::size_t>(mine.st_size) < min_size) {
    return fail(EINVAL, fmt::format("open {}: it holds {} bytes, fewer than the {} expected", what,
                                    mine.st_size, min_size));
  }
  s.object_ =
      NamedObject::posix(NamedObject::Kind::posix_shared_memory, std::move(name), fd, false);
  return s;
}

namespace {

struct DirStream {
  DIR* dir = nullptr;
  ~DirStream() {
    if (dir != nullptr) ::closedir(dir);
  }
};

// Calls `visit(dirfd, name, stat)` for each regular file of this user in
// /dev/shm.
template <class Visit>
Result<void> each_own_segment(Visit&& visit) {
  int dfd = ::open(kShmDir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return fail(errno, fmt::format("list {}", kShmDir));
  DirStream d{::fdopendir(dfd)};
  if (d.dir == nullptr) {
    int err = errno;
    ::close(dfd);
    return fail(err, fmt::format("list {}", kShmDir));
  }
  uid_t me = ::geteuid();
  while (dirent* e = ::readdir(d.dir)) {
    std::string_view n = e->d_name;
    if (n == "." || n == "..") continue;
    struct stat st {};
    if (::fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    if (!S_ISREG(st.st_mode) || st.st_uid != me) continue;
    if (auto ok = visit(dfd, e->d_name, st); !ok) return ok;
  }
  return {};
}

// Opens a segment of /dev/shm to probe its lease. Not blocking, not
// following a symlink swapped in, and checked to be the file listed.
Fd open_probe(int dfd, const char* name, const struct stat& listed) {
  Fd fd(::openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || !same_file(st, listed)) return Fd();
  return fd;
}

}  // namespace

Result<std::vector<PosixSegmentInfo>> posix_shared_memory_list() {
  std::vector<PosixSegmentInfo> out;
  auto ok = each_own_segment([&](int dfd, const char* name, const struct stat& st) -> Result<void> {
    PosixSegmentInfo info;
    info.name = std::string("/") + name;
    info.size = static_cast<std::size_t>(st.st_size);
    info.made_by_tether = (st.st_mode & kTetherMark) != 0;
    Fd fd = open_probe(dfd, name, st);
    // Unreadable (mode 0200, say): cannot be judged, so counted as held.
    info.held = !fd || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0;
    out.push_back(std::move(info));
    return {};
  });
  if (!ok) return std::unexpected(ok.error());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

Result<std::vector<std::string>> remove_abandoned_posix_shared_memory(std::string_view prefix) {
  std::vector<std::string> removed;
  auto ok = each_own_segment([&](int dfd, const char* name, const struct stat& st) -> Result<void> {
    std::string shown = std::string("/") + name;
    if (!shown.starts_with(prefix) || (st.st_mode & kTetherMark) == 0) return {};
    Fd fd = open_probe(dfd, name, st);
    if (!fd || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return {};  // held (or unreadable)
    // Nobody holds it, and while we hold the exclusive lock nobody can
    // start to (openers wait in flock, then see it gone). Unlink it only if
    // the name still leads to the file we locked.
    struct stat now {};
    if (::fstatat(dfd, name, &now, AT_SYMLINK_NOFOLLOW) != 0 || !same_file(now, st)) return {};
    if (::unlinkat(dfd, name, 0) != 0) {
      if (errno == ENOENT) return {};
      return fail(errno, "remove abandoned POSIX shared memory " + shown);
    }
    removed.push_back(std::move(shown));
    return {};
  });
  if (!ok) return std::unexpected(ok.error());
  return removed;
}

// ---------------------------------------------------------------- memfd

Result<Memfd> Memfd::create(std::size_t size, std::string_view debug_name) {
  std::string what = fmt::format("memfd {}", debug_name);
  if (auto ok = check_size(size, "create " + what); !ok) return std::unexpected(ok.error());
  // memfd_create(2): at most 249 bytes, and a C string.
  if (debug_name.size() > 249 || debug_name.find('\0') != std::string_view::npos) {
    return fail(EINVAL, fmt::format("create a memfd: its name must be at most 249 bytes with no "
                                    "NUL ({} bytes given)",
                                    debug_name.size()));
  }
  std::string name(debug_name);
  int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return fail(errno, "create " + what);
  Memfd m;
  m.fd_.reset(fd);
  m.what_ = std::move(what);
  if (auto ok = reserve(fd, size, m.what_); !ok) return std::unexpected(ok.error());
  return m;
}

Result<Memfd> Memfd::from_fd(Fd fd, std::size_t min_size) {
  if (!fd) return fail(EBADF, "adopt a memfd: no descriptor");
  // A memfd's /proc/self/fd link reads "/memfd:NAME (deleted)".
  char link[PATH_MAX];
  std::string proc = fmt::format("/proc/self/fd/{}", fd.get());
  ssize_t n = ::readlink(proc.c_str(), link, sizeof link);
  if (n < 0) return fail(errno, fmt::format("adopt descriptor {} as a memfd", fd.get()));
  std::string_view target(link, static_cast<std::size_t>(n));
  if (!target.starts_with("/memfd:")) {
    return fail(EINVAL, fmt::format("adopt descriptor {} as a memfd: it is {}", fd.get(),
                                    std::string(target)));
  }
  target.remove_prefix(7);
  if (target.ends_with(" (deleted)")) target.remove_suffix(10);
  Memfd m;
  m.what_ = fmt::format("memfd {}", target);
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0) return fail(errno, "adopt " + m.what_);
  if ((flags & O_PATH) != 0)
    return fail(EBADF, "adopt " + m.what_ + ": the descriptor was opened with O_PATH (no access)");
  m.access_ = (flags & O_ACCMODE) == O_RDONLY ? Access::read_only : Access::read_write;
  m.fd_ = std::move(fd);
  if (min_size > 0) {
    auto size = m.size();
    if (!size) return std::unexpected(size.error());
    if (*size < min_size) {
      return fail(EINVAL, fmt::format("adopt {}: it holds {} bytes, fewer than the {} expected",
                                      m.what_, *size, min_size));
    }
  }
  return m;
}

Result<void> Memfd::add_seals(int seals) const {
  if (::fcntl(fd_.get(), F_ADD_SEALS, seals) != 0) return fail(errno, "seal " + what_);
  return {};
}

Result<int> Memfd::seals() const {
  int s = ::fcntl(fd_.get(), F_GET_SEALS);
  if (s < 0) return fail(errno, "read the seals of " + what_);
  return s;
}

// ---------------------------------------------------------------- file

Result<MappedFile> MappedFile::create(std::filesystem::path path, std::size_t size, mode_t mode) {
  std::string what = "file " + path.string();
  if (auto ok = check_size(size, "create " + what); !ok) return std::unexpected(ok.error());
  mode &= 0777;  // never set-user-ID, set-group-ID or sticky
  int fd = retry_eintr([&] {
    return ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  });
  if (fd < 0) return fail(errno, "create " + what);
  MappedFile f;
  f.fd_.reset(fd);
  f.what_ = what;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::unlink(path.c_str());  // made by us a moment ago (O_EXCL)
    return fail(err, "create " + what);
  }
  f.object_ = NamedObject::file(path.string(), st, true);
  if (::fchmod(fd, mode) != 0) return fail(errno, "set mode of " + what);
  if (auto ok = reserve(fd, size, what); !ok) return std::unexpected(ok.error());
  return f;
}

Result<MappedFile> MappedFile::open(std::filesystem::path path, Access access,
                                    std::size_t grow_to) {
  std::string what = "file " + path.string();
  if (grow_to > 0 && access == Access::read_only)
    return fail(EINVAL, "open " + what + ": growing it needs read_write access");
  // O_NONBLOCK: a FIFO planted at the path must not block the open.
  int flags = (access == Access::read_write ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK |
              O_NOCTTY | O_CLOEXEC;
  int fd = retry_eintr([&] { return ::open(path.c_str(), flags); });
  if (fd < 0) {
    int err = errno;
    if (err == ELOOP) return fail(err, "open " + what + ": it is a symbolic link");
    return fail(err, "open " + what);
  }
  MappedFile f;
  f.fd_.reset(fd);
  f.what_ = what;
  f.access_ = access;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(errno, "open " + what);
  if (!S_ISREG(st.st_mode)) {
    std::string_view kind = S_ISFIFO(st.st_mode)   ? "a FIFO"
                            : S_ISDIR(st.st_mode)  ? "a directory"
                            : S_ISSOCK(st.st_mode) ? "a socket"
                                                   : "a device";
    return fail(EINVAL, fmt::format("open {}: it is {}, not a regular file", what, kind));
  }
  int status = ::fcntl(fd, F_GETFL);
  if (status < 0 || ::fcntl(fd, F_SETFL, status & ~O_NONBLOCK) != 0)
    return fail(errno, "open " + what);
  if (grow_to > static_cast<std::size_t>(st.st_size)) {
    if (auto ok = reserve(fd, grow_to, what); !ok) return std::unexpected(ok.error());
  }
  f.object_ = NamedObject::file(path.string(), st, false);
  return f;
}

// ---------------------------------------------------------------- System V

namespace {

std::string sysv_what(int id) {
  return fmt::format("System V shared memory {}", id);
}

}  // namespace

Result<SysvSharedMemory> SysvSharedMemory::create(SysvKey key, std::size_t size, mode_t mode) {
  std::string what = "System V shared memory with key " + key.describe();
  if (auto ok = check_size(size, "create " + what); !ok) return std::unexpected(ok.error());
  int id = ::shmget(key.get(), size, IPC_CREAT | IPC_EXCL | static_cast<int>(mode & 0777));
  if (id < 0) {
    int err = errno;
    if (err == EINVAL) {
      return fail(err, fmt::format("create {} of {} bytes: beyond the system's limit on a "
                                   "segment's size (/proc/sys/kernel/shmmax)",
                                   what, size));
    }
    if (err == ENOSPC) {
      return fail(err, fmt::format("create {} of {} bytes: the system's limit on segments or "
                                   "their total size would be exceeded (/proc/sys/kernel/shmmni, "
                                   "shmall)",
                                   what, size));
    }
    if (err == EEXIST) return fail(err, "create " + what + ": the key is taken");
    return fail(err, "create " + what);
  }
  SysvSharedMemory s;
  s.object_ = NamedObject::sysv(NamedObject::Kind::sysv_shared_memory, id, key, true);
  s.size_ = size;
  return s;
}

Result<SysvSharedMemory> SysvSharedMemory::open(SysvKey key, std::size_t size) {
  std::string what = "System V shared memory with key " + key.describe();
  if (key.is_private())
    return fail(EINVAL, "open " + what + ": a private segment is reached only by its id (from_id)");
  int id = ::shmget(key.get(), 0, 0);
  if (id < 0) return fail(errno, "open " + what);
  shmid_ds ds{};
  if (::shmctl(id, IPC_STAT, &ds) != 0) return fail(errno, "open " + what);
  if (size > 0 && ds.shm_segsz != size) {
    return fail(EINVAL, fmt::format("open {}: it exists with {} bytes, not the {} expected", what,
                                    ds.shm_segsz, size));
  }
  SysvSharedMemory s;
  s.object_ = NamedObject::sysv(NamedObject::Kind::sysv_shared_memory, id, key, false);
  s.size_ = ds.shm_segsz;
  return s;
}

Result<SysvSharedMemory> SysvSharedMemory::from_id(int id) {
  shmid_ds ds{};
  if (::shmctl(id, IPC_STAT, &ds) != 0) return fail(errno, "open " + sysv_what(id));
  SysvSharedMemory s;
  s.object_ = NamedObject::sysv(NamedObject::Kind::sysv_shared_memory, id, std::nullopt, false);
  s.size_ = ds.shm_segsz;
  return s;
}

Result<Mapping> SysvSharedMemory::attach(Access access) const {
  std::string what = sysv_what(id());
  if (!valid()) return fail(EINVAL, "attach System V shared memory: none (moved from)");
  void* p = ::shmat(id(), nullptr, access == Access::read_only ? SHM_RDONLY : 0);
  if (p == reinterpret_cast<void*>(-1)) return fail(errno, "attach " + what);
  Mapping m;
  m.data_ = p;
  m.size_ = size_;
  m.what_ = std::move(what);
  m.access_ = access;
  m.sysv_ = true;
  return m;
}

Result<SysvSharedMemory::Stats> SysvSharedMemory::stats() const {
  shmid_ds ds{};
  if (::shmctl(id(), IPC_STAT, &ds) != 0)
    return fail(errno, "read the state of " + sysv_what(id()));
  Stats s;
  s.size = ds.shm_segsz;
  s.attachments = ds.shm_nattch;
  s.creator = ds.shm_cpid;
  s.last = ds.shm_lpid;
  s.owner = ds.shm_perm.uid;
  s.mode = static_cast<mode_t>(ds.shm_perm.mode & 0777);
  s.removed = (ds.shm_perm.mode & SHM_DEST) != 0;
  return s;
}

}  // namespace tether
