#include "tether/channel/fifo.hpp"

#include <fcntl.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>

#include <fmt/format.h>

#include "tether/sys/backoff.hpp"

namespace tether {

namespace {

// Opens `path` with O_NOFOLLOW and checks that what was opened is a FIFO
// belonging to us: a symlink, a regular file or another user's FIFO planted
// at the path is refused.
Result<Fd> open_checked(const std::filesystem::path& path, int flags, std::string_view what) {
  auto context = [&] { return fmt::format("open FIFO {} for {}", path.string(), what); };
  int fd = retry_eintr([&] { return ::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC); });
  if (fd < 0) {
    int err = errno;
    if (err == ELOOP) return fail(err, context() + ": it is a symbolic link");
    if (err == ENXIO) return fail(err, context() + ": no reader");
    return fail(err, context());
  }
  Fd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(errno, context());
  if (!S_ISFIFO(st.st_mode)) return fail(EEXIST, context() + ": the path exists and is not a FIFO");
  if (st.st_uid != ::geteuid()) {
    return fail(EPERM, fmt::format("{}: the FIFO belongs to uid {}", context(), st.st_uid));
  }
  return owned;
}

// Looks at what is at `path` without opening it for I/O: an O_PATH
// descriptor is neither a reader nor a writer, so probing can never pair with
// (and then abandon) a process waiting at the other end. Same checks as
// open_checked; a symbolic link is seen as itself (O_PATH | O_NOFOLLOW).
Result<Fd> probe(const std::filesystem::path& path, std::string_view what, struct stat& st) {
  auto context = [&] { return fmt::format("{} FIFO {}", what, path.string()); };
  Fd fd(::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return fail(errno, context());
  if (::fstat(fd.get(), &st) != 0) return fail(errno, context());
  if (S_ISLNK(st.st_mode)) return fail(ELOOP, context() + ": it is a symbolic link");
  if (!S_ISFIFO(st.st_mode)) return fail(EEXIST, context() + ": the path exists and is not a FIFO");
  if (st.st_uid != ::geteuid()) {
    return fail(EPERM, fmt::format("{}: the FIFO belongs to uid {}", context(), st.st_uid));
  }
  return fd;
}

// The mode the caller asked for (O_NONBLOCK on or off), after opening
// non-blocking.
Result<void> set_mode(const Fd& fd, bool nonblocking) {
  return fd.set_nonblocking(nonblocking);
}

}  // namespace

Result<Fifo> Fifo::create(std::filesystem::path path, mode_t mode) {
  Fifo fifo;
  fifo.path_ = std::move(path);
  bool created = ::mkfifo(fifo.path_.c_str(), mode) == 0;
  if (!created && errno != EEXIST) return fail(errno, "create FIFO " + fifo.path_.string());
  struct stat st {};
  auto fd = probe(fifo.path_, "create", st);
  if (!fd) return std::unexpected(fd.error());
  // The umask may have narrowed the mode; widening it to what was asked is
  // safe: it never had more than that. chmod through /proc/self/fd reaches
  // exactly the inode we probed, even if the path changes meanwhile.
  if (created && (st.st_mode & 07777) != mode) {
    std::string self = fmt::format("/proc/self/fd/{}", fd->get());
    if (::chmod(self.c_str(), mode) != 0) {
      int err = errno;
      (void)::unlink(fifo.path_.c_str());
      return fail(err, "set mode of FIFO " + fifo.path_.string());
    }
  }
  fifo.object_ = NamedObject::file(fifo.path_.string(), st, created);
  return fifo;
}

Result<Fifo> Fifo::attach(std::filesystem::path path) {
  struct stat st {};
  auto fd = probe(path, "attach to", st);
  if (!fd) return std::unexpected(fd.error());
  Fifo fifo;
  fifo.path_ = std::move(path);
  fifo.object_ = NamedObject::file(fifo.path_.string(), st, false);
  return fifo;
}

Result<FifoReader> Fifo::open_reader(Deadline deadline, FifoReadOptions options) const {
  if (options.keep_listening) {
    auto fd = open_checked(path_, O_RDONLY | O_NONBLOCK, "reading");
    if (!fd) return std::unexpected(fd.error());
    // Our own writer: the FIFO never runs out of writers while we read.
    auto keepalive = open_checked(path_, O_WRONLY | O_NONBLOCK, "reading (keep-alive writer)");
    if (!keepalive) return std::unexpected(keepalive.error());
    if (auto m = set_mode(*fd, options.nonblocking); !m) return std::unexpected(m.error());
    return FifoReader(std::move(*fd), options.nonblocking, std::move(*keepalive));
  }
  bool wait_for_writer = deadline.is_never() && !options.nonblocking;
  auto fd = open_checked(path_, wait_for_writer ? O_RDONLY : O_RDONLY | O_NONBLOCK, "reading");
  if (!fd) return std::unexpected(fd.error());
  if (!wait_for_writer) {
    if (auto m = set_mode(*fd, options.nonblocking); !m) return std::unexpected(m.error());
  }
  return FifoReader(std::move(*fd), options.nonblocking, Fd());
}

Result<PipeWriter> Fifo::open_writer(Deadline deadline, bool nonblocking) const {
  if (deadline.is_never() && !nonblocking) {
    auto fd = open_checked(path_, O_WRONLY, "writing");
    if (!fd) return std::unexpected(fd.error());
    return PipeWriter(std::move(*fd), false);
  }
  // inotify wakes us as soon as a reader's open(2) completes. A reader
  // blocked inside open(2), waiting for a writer (cat, head, Python's
  // os.open), already counts as a reader but has not completed its open, so
  // inotify says nothing: we also try again with a backoff of 1 to 50 ms.
  Fd watch;
  Backoff backoff{std::chrono::milliseconds(1), std::chrono::milliseconds(50)};
  for (;;) {
    auto fd = open_checked(path_, O_WRONLY | O_NONBLOCK, "writing");
    if (fd) {
      if (auto m = set_mode(*fd, nonblocking); !m) return std::unexpected(m.error());
      return PipeWriter(std::move(*fd), nonblocking);
    }
    if (fd.error() != std::errc::no_such_device_or_address || deadline.expired()) {
      return std::unexpected(fd.error());
    }
    if (!watch.valid()) {
      // The first retry comes right after the watch exists, so an open
      // between our attempt and the watch is not missed.
      watch.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
      if (!watch.valid()) return fail(errno, "watch FIFO " + path_.string());
      if (::inotify_add_watch(watch.get(), path_.c_str(), IN_OPEN | IN_DONT_FOLLOW) < 0) {
        return fail(errno, "watch FIFO " + path_.string());
      }
      continue;
    }
    auto ready = wait_fd(watch.get(), POLLIN, min(deadline, Deadline(backoff.next())),
                         "a reader of FIFO " + path_.string());
    if (!ready && ready.error() != std::errc::timed_out) return std::unexpected(ready.error());
    if (ready) {
      std::array<char, 4096> events;
      while (::read(watch.get(), events.data(), events.size()) > 0) {
      }
    }
  }
}

}  // namespace tether
