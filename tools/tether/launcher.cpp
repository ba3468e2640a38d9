#include "launcher.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tether/supervise.hpp"
#include "tether/supervise/launch.hpp"

namespace tether_cli {

namespace launch = tether::launch;

namespace {

void say(const launch::Report& r) {
  std::string line = launch::encode_report(r);
  (void)tether::write_some(launch::kReportFd, std::as_bytes(std::span(line)), "report");
}

void say_error(const std::string& id, std::string text) {
  say({launch::Report::Kind::error, id, 0, 0, std::move(text)});
}

// A growing anonymous mapping (mremap), for the launch text.
class LaunchBuffer {
 public:
  LaunchBuffer() = default;
  LaunchBuffer(const LaunchBuffer&) = delete;
  LaunchBuffer& operator=(const LaunchBuffer&) = delete;
  ~LaunchBuffer() {
    if (data_ != nullptr) ::munmap(data_, capacity_);
  }
  // Where the next bytes go: at least a page, the mapping grown if full.
  tether::Result<std::span<std::byte>> room() {
    if (size_ == capacity_) {
      if (capacity_ >= launch::kMaxLaunch) {
        return tether::fail(tether::errc::bad_record, "launch: too large");
      }
      std::size_t more = capacity_ == 0 ? std::size_t{64} << 10 : capacity_ * 2;
      void* p = data_ == nullptr ? ::mmap(nullptr, more, PROT_READ | PROT_WRITE,
                                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                                 : ::mremap(data_, capacity_, more, MREMAP_MAYMOVE);
      if (p == MAP_FAILED) return tether::fail(errno, "launch: map a buffer");
      data_ = static_cast<std::byte*>(p);
      capacity_ = more;
    }
    return std::span(data_ + size_, capacity_ - size_);
  }
  void grew(std::size_t n) noexcept { size_ += n; }
  std::string_view view() const noexcept { return {reinterpret_cast<const char*>(data_), size_}; }

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0, capacity_ = 0;
};

}  // namespace

int launcher_main() {
  ::prctl(PR_SET_NAME, "tether-sup");  // what ps and pgrep show
  // The launch, whole, from the pipe (never from argv, which every user
  // can read in /proc/PID/cmdline), into a mapping of its own rather than
  // the heap: the children share this process's pages, and a heap left
  // with the free chunks of a growing string is where their allocations
  // would land, making the shared pages theirs (docs/benchmarks.md).
  LaunchBuffer text;
  for (;;) {
    auto room = text.room();
    if (!room) return say_error("-", room.error().message()), 2;
    auto n = tether::read_some(launch::kSpecFd, *room, "launch");
    if (!n) return say_error("-", n.error().message()), 2;
    if (*n == 0) break;
    text.grew(*n);
  }
  // Checked for its form here; each supervisor decodes its own spec after
  // the fork, so this process's heap stays almost empty: the children share
  // its pages, and what they allocate lands on fresh pages of their own
  // instead of in free chunks scattered over shared ones (decoding all the
  // specs here first cost 20-25 KiB more PSS per worker; measured).
  auto split = launch::split_launch(text.view());
  if (!split) return say_error("-", split.error().message()), 2;
  struct stat st {};
  if (::fstat(launch::kStateFd, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
    return say_error("-", "the state directory (fd 4) is not a directory of ours"), 2;
  }
  auto dir = tether::StateDir::adopt(tether::Fd(launch::kStateFd), split->state_dir);
  const auto& lines = split->specs;
  // The id, for a report when a line cannot even be decoded.
  auto id_of = [](std::string_view line) {
    auto at = line.find("\"id\":\"");
    if (at == std::string_view::npos) return std::string("-");
    auto from = at + 6, to = line.find('"', from);
    return to == std::string_view::npos ? std::string("-")
                                        : std::string(line.substr(from, to - from));
  };
  auto run_one = [&](std::size_t i) {
    auto spec = launch::decode_spec(lines[i]);
    if (!spec) return say_error(id_of(lines[i]), spec.error().message()), 1;
    return tether::run_supervisor(dir, *spec, launch::kReportFd);
  };
  if (lines.size() == 1) return run_one(0);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    pid_t pid = ::fork();
    if (pid < 0) {
      say_error(id_of(lines[i]), fmt::format("fork: {}", std::strerror(errno)));
      continue;
    }
    if (pid == 0) {
      ::setsid();  // each leads its own session, as a lone one does
      ::_exit(run_one(i));
    }
    say({launch::Report::Kind::forked, id_of(lines[i]), 0, pid, {}});
  }
  return 0;
}

int run_demo_worker(std::optional<std::chrono::milliseconds> poll_interval) {
  // SIGTERM and SIGINT arrive as a descriptor, next to the input.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  tether::Fd sig(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  auto print = [](const std::string& line_text) {
    std::string line = line_text + "\n";
    (void)tether::write_some(1, std::as_bytes(std::span(line)), "stdout");
  };
  print(poll_interval
            ? fmt::format("demo worker {} started (non-blocking: polls its input every {} ms)",
                          ::getpid(), poll_interval->count())
            : fmt::format("demo worker {} started (blocking: waits for a command)", ::getpid()));
  (void)tether::WorkerInbox::notify_ready();
  auto inbox = tether::WorkerInbox::standard_input();
  for (;;) {
    pollfd fds[2] = {{0, POLLIN, 0}, {sig.get(), POLLIN, 0}};
    tether::Deadline wait =
        poll_interval ? tether::Deadline(*poll_interval) : tether::Deadline::never();
    auto n = tether::poll_fds(fds, wait);
    if (!n) {
      print("poll failed: " + n.error().message());
      return 1;
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo si{};
      (void)::read(sig.get(), &si, sizeof si);
      print(fmt::format("got {}: exiting", tether::signal_name(static_cast<int>(si.ssi_signo))));
      return 0;
    }
    if (*n == 0) {
      print("FIFO is empty");
      continue;
    }
    // Take every complete line that arrived.
    for (;;) {
      auto line = inbox.next(tether::Deadline::immediate());
      if (!line) {
        if (line.error() == tether::errc::end_of_stream) {
          print("input closed: exiting");
          return 0;
        }
        break;  // nothing more for now
      }
      print("received: " + *line);
      if (*line == "exit") {
        print("exit requested: bye");
        return 0;
      }
    }
  }
}

}  // namespace tether_cli
