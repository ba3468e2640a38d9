// The test binary's helper mode: small child programs used by the tests.
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support.hpp"

namespace tether_test {

namespace {

void write_fully(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::_Exit(3);
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

void say(const std::string& text) {
  write_fully(1, text.data(), text.size());
}

double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Byte `i` of a spewed stream: a pattern that detects lost or reordered data.
char pattern(std::size_t i, char salt) {
  return static_cast<char>('a' + (i / 7 + salt) % 26);
}

}  // namespace

int run_helper(int argc, char** argv) {
  std::string name = argv[2];
  std::vector<std::string> args(argv + 3, argv + argc);
  auto num = [&](std::size_t i) { return std::stoll(args.at(i)); };

  if (name == "exit") return static_cast<int>(num(0));
  if (name == "signal") {
    signal(static_cast<int>(num(0)), SIG_DFL);
    raise(static_cast<int>(num(0)));
    return 99;
  }
  if (name == "sleep") {
    usleep(static_cast<useconds_t>(num(0) * 1000));
    return 0;
  }
  if (name == "ignore-term-sleep") {
    signal(SIGTERM, SIG_IGN);
    say("ready\n");
    usleep(static_cast<useconds_t>(num(0) * 1000));
    return 0;
  }
  if (name == "echo") {  // stdin to stdout until end of file
    std::vector<char> buf(65536);
    for (;;) {
      ssize_t n = ::read(0, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return n == 0 ? 0 : 4;
      write_fully(1, buf.data(), static_cast<std::size_t>(n));
    }
  }
  if (name == "spew") {  // N bytes to stdout and M to stderr, interleaved
    std::size_t out = static_cast<std::size_t>(num(0)), err = static_cast<std::size_t>(num(1));
    std::size_t out_done = 0, err_done = 0;
    std::vector<char> buf(65536);
    while (out_done < out || err_done < err) {
      for (int fd : {1, 2}) {
        std::size_t& done = fd == 1 ? out_done : err_done;
        std::size_t total = fd == 1 ? out : err;
        std::size_t n = std::min(buf.size(), total - done);
        for (std::size_t i = 0; i < n; ++i) buf[i] = pattern(done + i, fd == 1 ? 0 : 5);
        write_fully(fd, buf.data(), n);
        done += n;
      }
    }
    return 0;
  }
  if (name == "fds") {  // the descriptors this process has, one per line
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
      say(e.path().filename().string() + "\n");
    }
    return 0;
  }
  if (name == "env") {
    const char* v = getenv(args.at(0).c_str());
    say(v ? std::string(v) + "\n" : "<unset>\n");
    return 0;
  }
  if (name == "cwd") {
    say(std::filesystem::current_path().string() + "\n");
    return 0;
  }
  if (name == "argv") {
    for (int i = 0; i < argc; ++i) say(std::string(argv[i]) + "\n");
    return 0;
  }
  if (name == "ids") {  // pid pgid sid
    say(std::to_string(getpid()) + " " + std::to_string(getpgid(0)) + " " +
        std::to_string(getsid(0)) + "\n");
    return 0;
  }
  if (name == "burn") {  // spin for N ms of CPU time
    double until = cpu_seconds() + static_cast<double>(num(0)) / 1000.0;
    volatile unsigned long x = 0;
    while (cpu_seconds() < until) x = x + 1;
    return 0;
  }
  if (name == "alloc") {  // touch N MiB
    std::size_t bytes = static_cast<std::size_t>(num(0)) << 20;
    auto* p = static_cast<char*>(
        mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    for (std::size_t i = 0; i < bytes; i += 4096) p[i] = 1;
    return 0;
  }
  if (name == "status-lines") {  // SigBlk/SigIgn/SigCgt of /proc/self/status
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.starts_with("SigBlk") || line.starts_with("SigIgn")) say(line + "\n");
    }
    return 0;
  }
  if (name == "orphan") {  // start a grandchild sleeping N ms, print its pid, exit
    pid_t pid = fork();
    if (pid == 0) {
      usleep(static_cast<useconds_t>(num(0) * 1000));
      _exit(7);
    }
    say(std::to_string(pid) + "\n");
    return 0;
  }
  if (name == "deathsig-parent") {  // spawn a grandchild that dies with us, print its pid, exit
    auto child = tether::Command(self_exe())
                     .args({"--helper", "sleep", "20000"})
                     .die_with_parent(SIGKILL)
                     .spawn();
    if (!child) return 5;
    say(std::to_string(child->pid()) + "\n");
    _exit(0);  // no destructor runs: the grandchild is left to its death signal
  }
  if (name == "records") {  // COUNT records of PIPE_BUF bytes of LETTER, one write each
    std::string record(PIPE_BUF, args.at(0)[0]);
    for (long long i = 0; i < num(1); ++i) {
      if (::write(1, record.data(), record.size()) != static_cast<ssize_t>(record.size())) return 6;
    }
    return 0;
  }
  if (name == "stderr") {  // a line to stderr, another to stdout
    write_fully(2, "to stderr\n", 10);
    write_fully(1, "to stdout\n", 10);
    return 0;
  }
  if (name == "pty-check") {  // what a child on a terminal sees of it, one fact a line
    auto n = [](long v) { return std::to_string(v); };
    say("isatty " + n(isatty(0)) + " " + n(isatty(1)) + " " + n(isatty(2)) + "\n");
    const char* tty = ttyname(0);
    say(std::string("ttyname ") + (tty ? tty : "-") + "\n");
    // /dev/tty opens only for a process that has a controlling terminal.
    int fd = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    say(fd >= 0 ? std::string("devtty ok\n") : "devtty errno " + n(errno) + "\n");
    if (fd >= 0) ::close(fd);
    say("ids " + n(getpid()) + " " + n(getsid(0)) + " " + n(tcgetsid(0)) + " " + n(tcgetpgrp(0)) +
        "\n");
    winsize ws{};
    ioctl(0, TIOCGWINSZ, &ws);
    say("winsize " + n(ws.ws_row) + " " + n(ws.ws_col) + "\n");
    return 0;
  }
  if (name == "pty-winch") {  // prints its window size, then again on each of N SIGWINCHes
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGWINCH);
    sigprocmask(SIG_BLOCK, &set, nullptr);  // before "size": no resize can be missed
    auto size = [] {
      winsize ws{};
      ioctl(0, TIOCGWINSZ, &ws);
      return std::to_string(ws.ws_row) + " " + std::to_string(ws.ws_col);
    };
    say("size " + size() + "\n");
    for (long long i = 0; i < num(0); ++i) {
      timespec limit{60, 0};  // a bound against a lost signal, not a timing
      if (sigtimedwait(&set, nullptr, &limit) != SIGWINCH) return 9;
      say("winch " + size() + "\n");
    }
    return 0;
  }
  if (name == "pty-read-line") {  // reads one line from stdin, says how long and what
    std::string line;
    char c;
    while (::read(0, &c, 1) == 1) {
      line += c;
      if (c == '\n') break;
    }
    say("got " + std::to_string(line.size()) + " bytes: " + line + "\n");
    return 0;
  }
  std::fprintf(stderr, "unknown helper %s\n", name.c_str());
  return 100;
}

}  // namespace tether_test

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "--helper") == 0)
    return tether_test::run_helper(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
