// tether/channel/fifo.hpp — named pipes (FIFOs) between unrelated processes.
//
//   auto fifo = tether::Fifo::create("/run/user/1000/app.fifo");  // mkfifo 0600, or reuse
//   auto reader = fifo->open_reader();            // waits for a writer, as open(2) does
//   // elsewhere:  echo hello > /run/user/1000/app.fifo
//
// A FIFO is a pipe with a name: the ends it opens are PipeReader/PipeWriter,
// with all their forms (deadline, try, read_exact, no SIGPIPE). The Fifo
// object that created the FIFO owns the name and removes it when destroyed
// (a NamedObject: owns(), release(), remove(), as every named object).
//
// Safety: the path is opened with O_NOFOLLOW and checked with fstat, so a
// symbolic link or a regular file planted at the path is refused, and so is
// a FIFO that belongs to another user. Removal unlinks the path only if it
// is still the FIFO this object created.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <filesystem>

#include "tether/channel/pipe.hpp"
#include "tether/sys.hpp"
#include "tether/sys/named.hpp"

namespace tether {

// The read end of a FIFO. With keep_listening, it also holds a write end of
// its own, so it never sees end of stream when the last writer leaves: a
// read simply waits for the next writer's data (the O_RDWR technique, done
// with two descriptors so the reader itself cannot write by mistake).
class FifoReader : public PipeReader {
 public:
  FifoReader() noexcept = default;
  FifoReader(Fd fd, bool nonblocking, Fd keepalive) noexcept
      : PipeReader(std::move(fd), nonblocking), keepalive_(std::move(keepalive)) {}
  bool keeps_listening() const noexcept { return keepalive_.valid(); }

 private:
  Fd keepalive_;
};

struct FifoReadOptions {
  // Never see end of stream; wait for the next writer instead.
  bool keep_listening = false;
  // Leave the returned end in O_NONBLOCK mode.
  bool nonblocking = false;
};

class Fifo {
 public:
  Fifo() noexcept = default;

  // mkfifo(path, mode) — 0600 by default, whatever the umask; an existing
  // FIFO of ours at the path is reused (and then not owned: not removed).
  // A path that exists but is not a FIFO, is a symbolic link, or is a FIFO
  // of another user is refused.
  static Result<Fifo> create(std::filesystem::path path, mode_t mode = 0600);
  // Refers to an existing FIFO without owning it (checked the same way).
  static Result<Fifo> attach(std::filesystem::path path);

  const std::filesystem::path& path() const noexcept { return path_; }
  bool owns() const noexcept { return object_.owns(); }
  // Keeps the FIFO on disk after this object is gone.
  void release() noexcept { object_.release(); }
  [[deprecated("use release()")]] void release_ownership() noexcept { release(); }
  // Removes the FIFO now (only if the path still holds the FIFO this object
  // created or attached to: EEXIST, "left alone", otherwise).
  Result<void> remove() { return object_.remove(); }

  // Opens the read end. With Deadline::never() it blocks until a writer
  // opens the FIFO, as open(2) does; with any other deadline it returns at
  // once without waiting for a writer (read with a deadline then waits for
  // data). Never blocks when options.keep_listening is set.
  Result<FifoReader> open_reader(Deadline deadline = Deadline::never(),
                                 FifoReadOptions options = {}) const;
  // Opens the write end. Blocks until a reader exists (never), waits until
  // the deadline, or with Deadline::immediate() fails at once with ENXIO:
  // "open FIFO /x for writing: no reader: No such device or address (ENXIO)".
  // The deadline form is woken by inotify when a reader's open completes;
  // a reader still blocked in its own open(2) is only seen by a retry, with
  // a backoff of 1 to 50 ms (Linux gives no event for it).
  Result<PipeWriter> open_writer(Deadline deadline = Deadline::never(),
                                 bool nonblocking = false) const;

 private:
  std::filesystem::path path_;
  NamedObject object_;  // the FIFO's identity, and whether we remove it
};

}  // namespace tether
