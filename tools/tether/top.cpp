// tether top: a live view of the workers, redrawn every interval.
//
// One frame is one pass of list_workers and worker_usage (the same reads as
// `tether list`); CPU % is the CPU time a worker and its processes used
// since the previous frame over the time between them (a worker seen for
// the first time: over its uptime, as `list` shows it). The terminal is put
// in non-canonical mode without echo and on the alternate screen, and put
// back however top ends: q, Ctrl-C, SIGTERM, SIGHUP, or Ctrl-Z (restored
// while stopped, taken again on continue). Signals are read from a
// signalfd, so the loop is one poll on it and the keyboard.
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "workers.hpp"

namespace tether_cli {

namespace {

using Clock = std::chrono::steady_clock;

enum class SortBy { name, cpu, memory, restarts, uptime };

std::string_view sort_word(SortBy s) {
  switch (s) {
    case SortBy::cpu:
      return "cpu";
    case SortBy::memory:
      return "memory";
    case SortBy::restarts:
      return "restarts";
    case SortBy::uptime:
      return "uptime";
    case SortBy::name:
      break;
  }
  return "name";
}

std::optional<SortBy> parse_sort(std::string_view w) {
  for (auto s : {SortBy::name, SortBy::cpu, SortBy::memory, SortBy::restarts, SortBy::uptime}) {
    if (w == sort_word(s)) return s;
  }
  return std::nullopt;
}

struct TopOptions {
  std::vector<std::string> keys;  // workers shown: ids, names, pids or sets; none: all
  double interval = 1.0;
  bool batch = false;
  int frames = 0;  // 0: until q (batch: 1)
  std::string sort = "name";
};
TopOptions topt;
CLI::App* top_cmd = nullptr;

struct Row {
  tether::WorkerInfo w;
  std::optional<tether::WorkerUsage> u;
  double cpu = 0;  // percent since the previous frame
};

// CPU time of each worker at the previous frame, by id; a worker whose pid
// changed (restarted) is measured afresh.
class CpuRates {
 public:
  double rate(const tether::WorkerInfo& w, const tether::WorkerUsage& u, Clock::time_point now) {
    auto it = seen_.find(w.id);
    double r = u.cpu_percent;
    if (it != seen_.end() && it->second.pid == w.pid) {
      auto wall = std::chrono::duration<double, std::milli>(now - it->second.at).count();
      auto used = static_cast<double>((u.cpu - it->second.cpu).count());
      // At most every core busy: a child that left the session and was
      // waited for brings its whole life's CPU into its parent's at once
      // (cutime), which would read as a spike far above that.
      static const double cores = std::max(1u, std::thread::hardware_concurrency());
      r = wall > 0 ? std::clamp(used / wall * 100.0, 0.0, 100.0 * cores) : 0.0;
    }
    next_[w.id] = {w.pid, u.cpu, now};
    return r;
  }
  // Ends a frame: what was not seen in it is forgotten.
  void end_frame() {
    seen_.swap(next_);
    next_.clear();
  }

 private:
  struct Seen {
    pid_t pid = 0;
    std::chrono::milliseconds cpu{0};
    Clock::time_point at;
  };
  std::map<std::string, Seen> seen_, next_;
};

bool wanted(const tether::WorkerInfo& w, const std::vector<std::string>& keys) {
  if (keys.empty()) return true;
  return std::any_of(keys.begin(), keys.end(), [&](const std::string& k) {
    return k == w.id || k == w.name || (!w.set.empty() && k == w.set) ||
           (w.pid > 0 && k == std::to_string(w.pid));
  });
}

void sort_rows(std::vector<Row>& rows, SortBy by) {
  auto memory = [](const Row& r) { return r.u ? std::max(r.u->pss_bytes, r.u->rss_bytes) : 0; };
  auto by_name = [](const Row& a, const Row& b) {
    return std::tie(a.w.name, a.w.id) < std::tie(b.w.name, b.w.id);
  };
  std::stable_sort(rows.begin(), rows.end(), [&](const Row& a, const Row& b) {
    switch (by) {
      case SortBy::cpu:
        if (a.u.has_value() != b.u.has_value()) return a.u.has_value();
        if (a.cpu != b.cpu) return a.cpu > b.cpu;
        break;
      case SortBy::memory:
        if (memory(a) != memory(b)) return memory(a) > memory(b);
        break;
      case SortBy::restarts:
        if (a.w.restarts != b.w.restarts) return a.w.restarts > b.w.restarts;
        break;
      case SortBy::uptime:
        if (a.w.uptime() != b.w.uptime()) return a.w.uptime() > b.w.uptime();
        break;
      case SortBy::name:
        break;
    }
    return by_name(a, b);
  });
}

// The first `width` columns of `s` (a UTF-8 sequence is never cut).
std::string fit(const std::string& s, std::size_t width) {
  std::size_t cols = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: same column
    if (cols == width) return s.substr(0, i);
    ++cols;
  }
  return s;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  if (!(in >> a >> b >> c)) return "";
  return fmt::format("load {} {} {}", a, b, c);
}

struct Screen {
  std::size_t width = 80, height = 24;
};

Screen screen_size() {
  Screen s;
  winsize ws{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
    s.width = ws.ws_col;
    s.height = ws.ws_row;
  }
  return s;
}

// The state directory once it exists (top may start before any worker).
class Source {
 public:
  // The workers to show, or why they cannot be read.
  tether::Result<std::vector<tether::WorkerInfo>> read() {
    if (!dir_) {
      auto d = state_dir(false);
      if (!d) {
        if (d.error() == std::errc::no_such_file_or_directory) {
          return std::vector<tether::WorkerInfo>{};
        }
        return std::unexpected(d.error());
      }
      dir_.emplace(std::move(*d));
    }
    auto all = tether::list_workers(*dir_);
    if (!all) return std::unexpected(all.error());
    skipped_ = all->skipped.size();
    return std::move(all->workers);
  }
  std::size_t skipped() const { return skipped_; }

 private:
  std::optional<tether::StateDir> dir_;
  std::size_t skipped_ = 0;
};

// One frame's lines, `screen.width` columns at most and `screen.height`
// lines at most (batch: every worker). `styled`: the heading in reverse
// video.
std::vector<std::string> frame(Source& source, CpuRates& rates, SortBy by, const Screen& screen,
                               bool styled, bool batch, bool* failed = nullptr) {
  std::vector<std::string> out;
  auto now = Clock::now();
  std::time_t t = std::time(nullptr);
  std::tm local{};
  ::localtime_r(&t, &local);
  char clock[16];
  std::strftime(clock, sizeof clock, "%H:%M:%S", &local);

  auto workers = source.read();
  std::vector<Row> rows;
  std::string error;
  if (failed != nullptr) *failed = !workers;
  if (!workers) {
    error = "tether: top: " + workers.error().message();
  } else {
    std::erase_if(*workers, [](const tether::WorkerInfo& w) { return !wanted(w, topt.keys); });
    auto usage = tether::worker_usage(*workers);
    for (std::size_t i = 0; i < workers->size(); ++i) {
      Row r{std::move((*workers)[i]), usage[i]};
      if (r.u) r.cpu = rates.rate(r.w, *r.u, now);
      rows.push_back(std::move(r));
    }
    rates.end_frame();
  }
  sort_rows(rows, by);

  std::map<std::string_view, int> states;
  double cpu_total = 0;
  std::uint64_t pss_total = 0;
  for (const auto& r : rows) {
    ++states[tether::to_string(r.w.state)];
    if (r.u) {
      cpu_total += r.cpu;
      pss_total += r.u->pss_bytes;
    }
  }
  std::string counts;
  for (const auto& [state, n] : states) counts += fmt::format(", {} {}", n, state);
  out.push_back(fmt::format("tether top  {}  {} worker{}{}  {}", clock, rows.size(),
                            rows.size() == 1 ? "" : "s", counts, load_average()));
  out.push_back(fmt::format(
      "cpu {:.1f}%  pss {}  sorted by {}{}", cpu_total, bytes_shown(pss_total), sort_word(by),
      batch ? std::string() : "  ·  q quit, c cpu, m memory, n name, r restarts, t uptime"));
  if (!error.empty()) out.push_back(error);
  if (source.skipped() > 0) {
    out.push_back(
        fmt::format("({} malformed record(s) skipped: tether list says which)", source.skipped()));
  }
  out.emplace_back();
  std::string head =
      fmt::format("{:<9} {:<16} {:>7} {:<15} {:>6} {:>7} {:>7} {:>8} {:>7}  {}", "ID", "NAME",
                  "PID", "STATE", "CPU%", "RSS", "PSS", "RESTARTS", "UPTIME", "COMMAND");
  out.push_back(head);
  // Room for rows below the heading: on a terminal shorter than the
  // heading, none (the frame is then cut to the screen's height below).
  std::size_t room = rows.size();
  if (!batch) room = screen.height > out.size() ? screen.height - out.size() : 0;
  std::size_t shown = std::min(rows.size(), room);
  if (shown < rows.size() && shown > 0) --shown;  // the last line says how many more
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& r = rows[i];
    out.push_back(fmt::format(
        "{:<9} {:<16} {:>7} {:<15} {:>6} {:>7} {:>7} {:>8} {:>7}  {}", printable(r.w.id),
        printable(r.w.name), r.w.pid > 0 ? std::to_string(r.w.pid) : "-",
        tether::to_string(r.w.state), r.u ? fmt::format("{:.1f}", r.cpu) : "-",
        r.u ? bytes_shown(r.u->rss_bytes) : "-", r.u ? bytes_shown(r.u->pss_bytes) : "-",
        r.w.restarts, uptime(r.w), printable(join(r.w.command))));
  }
  if (shown < rows.size()) out.push_back(fmt::format("… {} more", rows.size() - shown));
  if (rows.empty() && error.empty()) out.emplace_back("no workers");
  if (!batch) {
    if (out.size() > screen.height) out.resize(std::max<std::size_t>(screen.height, 1));
    for (auto& line : out) line = fit(line, screen.width);
  }
  if (styled) {
    for (auto& line : out) {
      if (line.rfind("ID ", 0) == 0) {
        line.append(screen.width - std::min(screen.width, line.size()), ' ');
        line.insert(0, "\x1b[7m");
        line += "\x1b[0m";
        break;
      }
    }
  }
  return out;
}

// The terminal top draws on, put back by leave() and by the destructor.
class Terminal {
 public:
  tether::Result<void> enter() {
    if (::isatty(STDIN_FILENO) == 1) {
      if (!saved_) {
        termios t{};
        if (::tcgetattr(STDIN_FILENO, &t) != 0) {
          return tether::fail(errno, "top: read the terminal's mode");
        }
        saved_ = t;
      }
      termios raw = *saved_;
      raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
      raw.c_cc[VMIN] = 1;
      raw.c_cc[VTIME] = 0;
      if (::tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) != 0) {
        return tether::fail(errno, "top: set the terminal's mode");
      }
    }
    active_ = true;
    // The alternate screen, the cursor hidden.
    return tether::write_all(STDOUT_FILENO, std::string_view("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J"),
                             "top: the terminal");
  }
  void leave() noexcept {
    if (!active_) return;
    active_ = false;
    (void)tether::write_all(STDOUT_FILENO, std::string_view("\x1b[?25h\x1b[?1049l"),
                            "top: the terminal");
    if (saved_) (void)::tcsetattr(STDIN_FILENO, TCSAFLUSH, &*saved_);
  }
  ~Terminal() { leave(); }
  Terminal() = default;
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

 private:
  std::optional<termios> saved_;
  bool active_ = false;
};

// The signals top reads from its signalfd (blocked; the mask is inherited
// by nothing: top starts no process).
tether::Result<tether::Fd> signal_fd(bool job_control) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&set, s);
  if (job_control) {  // on a terminal: redrawn at a resize, stopped at Ctrl-Z
    sigaddset(&set, SIGWINCH);
    sigaddset(&set, SIGTSTP);
    sigaddset(&set, SIGCONT);
  }
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0)
    return tether::fail(errno, "top: block signals");
  int fd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) return tether::fail(errno, "top: signalfd");
  return tether::Fd(fd);
}

// Ends top as the signal would have, once the terminal is put back: with
// its default action, so a shell (or a script's loop) sees a process the
// signal killed, and bash's Ctrl-C ends the loop too. SIGQUIT's default
// would dump core: 128 + its number instead, as the shell would show.
[[noreturn]] void die_of(int sig) {
  std::fflush(stdout);
  if (sig != SIGQUIT) {
    ::signal(sig, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    ::sigprocmask(SIG_UNBLOCK, &one, nullptr);
    ::raise(sig);
  }
  ::_exit(128 + sig);
}

// The signal waiting on the signalfd, or 0.
int pending_signal(int fd) {
  signalfd_siginfo si{};
  if (::read(fd, &si, sizeof si) != static_cast<ssize_t>(sizeof si)) return 0;
  return static_cast<int>(si.ssi_signo);
}

// Stops top with SIGTSTP's default action, until a SIGCONT: the signal is
// unblocked just for this (it is otherwise read from the signalfd).
void suspend() {
  sigset_t tstp;
  sigemptyset(&tstp);
  sigaddset(&tstp, SIGTSTP);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGTSTP, &dfl, nullptr);
  ::sigprocmask(SIG_UNBLOCK, &tstp, nullptr);
  ::kill(0, SIGTSTP);  // delivered, and top stopped, before kill returns
  ::sigprocmask(SIG_BLOCK, &tstp, nullptr);
}

int run_batch(SortBy by) {
  auto sfd = signal_fd(false);
  if (!sfd) return report_error(sfd.error());
  Source source;
  CpuRates rates;
  int frames = topt.frames > 0 ? topt.frames : 1;
  bool failed = false;
  for (int i = 0; i < frames; ++i) {
    if (i > 0) {
      pollfd p{sfd->get(), POLLIN, 0};
      auto r = tether::poll_fds({&p, 1}, std::chrono::duration<double>(topt.interval));
      if (!r) return report_error(r.error());
      if (int sig = *r > 0 ? pending_signal(sfd->get()) : 0; sig != 0) die_of(sig);
    }
    std::string text = i > 0 ? "\n" : "";
    for (const auto& line : frame(source, rates, by, {}, false, true, &failed)) {
      text += line + "\n";
    }
    if (auto w = tether::write_all(STDOUT_FILENO, text, "top: standard output"); !w) {
      return report_error(w.error());
    }
  }
  // A signal that came during the last frame (or the only one) ends it so too.
  if (int sig = pending_signal(sfd->get()); sig != 0) die_of(sig);
  return failed ? 1 : 0;  // the last frame could not read the workers (it says why)
}

int run_live(SortBy by) {
  bool keys = ::isatty(STDIN_FILENO) == 1;
  auto sfd = signal_fd(true);
  if (!sfd) return report_error(sfd.error());
  Terminal term;
  if (auto e = term.enter(); !e) return report_error(e.error());
  Source source;
  CpuRates rates;
  int drawn = 0;
  bool stdin_open = keys;
  for (;;) {
    auto size = screen_size();
    std::string text = "\x1b[H";
    for (const auto& line : frame(source, rates, by, size, true, false))
      text += line + "\x1b[K\r\n";
    text.resize(text.size() - 2);  // no newline after the last: the screen would scroll
    text += "\x1b[J";
    if (auto w = tether::write_all(STDOUT_FILENO, text, "top: the terminal"); !w) {
      term.leave();
      return report_error(w.error());
    }
    if (topt.frames > 0 && ++drawn >= topt.frames) return 0;
    tether::Deadline next = std::chrono::duration<double>(topt.interval);
    bool redraw = false;
    while (!redraw) {
      pollfd p[2] = {{sfd->get(), POLLIN, 0}, {stdin_open ? STDIN_FILENO : -1, POLLIN, 0}};
      auto r = tether::poll_fds(p, next);
      if (!r) {
        term.leave();
        return report_error(r.error());
      }
      if (*r == 0) break;  // the interval is over
      if ((p[0].revents & POLLIN) != 0) {
        signalfd_siginfo si{};
        while (::read(sfd->get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
          switch (si.ssi_signo) {
            case SIGWINCH:
            case SIGCONT:
              redraw = true;
              break;
            case SIGTSTP:
              // Stop with the terminal as it was, as the job control a
              // shell expects: SIGTSTP, with its default action, to the
              // whole process group (a pipeline stops together). Once
              // continued, the terminal is taken again.
              term.leave();
              suspend();
              if (auto e = term.enter(); !e) return report_error(e.error());
              redraw = true;
              break;
            case SIGINT:
              return 0;  // Ctrl-C quits, as q does (so procps's top and htop)
            default:
              // TERM, HUP, QUIT: ended from outside, as the signal ends a
              // process, once the terminal is put back.
              term.leave();
              die_of(static_cast<int>(si.ssi_signo));
          }
        }
      }
      if ((p[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
        char keys_read[64];
        ssize_t n = ::read(STDIN_FILENO, keys_read, sizeof keys_read);
        if (n <= 0) {
          stdin_open = false;  // no keyboard any more: Ctrl-C still ends it
          continue;
        }
        for (ssize_t i = 0; i < n; ++i) {
          switch (keys_read[i]) {
            case 'q':
            case 'Q':
              return 0;
            case 'c':
              by = SortBy::cpu;
              break;
            case 'm':
              by = SortBy::memory;
              break;
            case 'n':
              by = SortBy::name;
              break;
            case 'r':
              by = SortBy::restarts;
              break;
            case 't':
              by = SortBy::uptime;
              break;
            default:
              break;  // any other key: draw now
          }
        }
        redraw = true;
      }
    }
  }
}

}  // namespace

void add_top_command(CLI::App& app) {
  top_cmd = app.add_subcommand("top", "A live view of the workers: CPU, memory, restarts");
  top_cmd->add_option("workers", topt.keys, "Show only these workers: ids, names, pids or sets");
  top_cmd->add_option("-d,--interval", topt.interval, "Seconds between refreshes (0.1 to 3600)")
      ->check(CLI::Range(0.1, 3600.0))
      ->default_str("1");
  top_cmd->add_option("-s,--sort", topt.sort, "Sort by: name, cpu, memory, restarts, uptime")
      ->check(CLI::IsMember({"name", "cpu", "memory", "restarts", "uptime"}))
      ->default_str("name");
  top_cmd->add_flag("-b,--batch", topt.batch,
                    "Print frames as plain text, one after another (for pipes and logs)");
  top_cmd
      ->add_option("-n,--frames", topt.frames,
                   "Stop after this many frames (batch: 1 unless given)")
      ->check(CLI::Range(1, 1000000));
}

int run_top() {
  if (top_cmd == nullptr || !*top_cmd) return -1;
  if (std::isnan(topt.interval)) {
    fmt::print(stderr, "tether: top: --interval: not a number\n");
    return 2;
  }
  auto by = parse_sort(topt.sort).value_or(SortBy::name);
  if (topt.batch) return run_batch(by);
  if (::isatty(STDOUT_FILENO) != 1) {
    fmt::print(stderr,
               "tether: top: standard output is not a terminal; use `tether top --batch` (or "
               "`tether list`)\n");
    return 2;
  }
  return run_live(by);
}

}  // namespace tether_cli
