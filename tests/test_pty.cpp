// A child on a pseudo-terminal (Command::pty, Stdio::pty, Pty).
#include <fcntl.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <array>
#include <map>
#include <sstream>

#include "support.hpp"

using namespace std::chrono_literals;
using tether::Command;
using tether::Stdio;
using tether::WindowSize;
using tether_test::Clean;
using tether_test::helper;
using tether_test::must;

namespace {

// A bound so that a broken test fails instead of hanging; never a timing.
constexpr auto patience = 30s;

// "key rest of line" lines (with the terminal's "\r\n") into a map.
std::map<std::string, std::string> facts(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto space = line.find(' ');
    if (space != std::string::npos) out[line.substr(0, space)] = line.substr(space + 1);
  }
  return out;
}

}  // namespace

using Pty = Clean;

TEST_F(Pty, ChildHasTheTerminalOnItsStandardStreams) {
  auto child = must(helper("pty-check").pty().spawn());
  ASSERT_TRUE(child.pty().valid());
  EXPECT_TRUE(child.pty().slave_name().starts_with("/dev/pts/")) << child.pty().slave_name();
  auto seen = facts(must(child.pty().read_all(patience)));
  EXPECT_EQ(seen["isatty"], "1 1 1");
  EXPECT_EQ(seen["ttyname"], child.pty().slave_name());
  EXPECT_TRUE(must(child.wait(patience)).success());
}

TEST_F(Pty, IsTheControllingTerminalOfANewSession) {
  auto child = must(helper("pty-check").pty().spawn());
  auto pid = std::to_string(child.pid());
  EXPECT_EQ(child.process_group(), child.pid());
  auto seen = facts(must(child.pty().read_all(patience)));
  EXPECT_EQ(seen["devtty"], "ok");
  // getsid, tcgetsid(0), tcgetpgrp(0): it leads the session the terminal
  // belongs to, and its group is the terminal's foreground group.
  EXPECT_EQ(seen["ids"], pid + " " + pid + " " + pid + " " + pid);
  EXPECT_TRUE(must(child.wait(patience)).success());
}

TEST_F(Pty, ChildSeesTheWindowSizeSet) {
  auto child = must(helper("pty-check").pty({.rows = 33, .cols = 101}).spawn());
  EXPECT_EQ(must(child.pty().window_size()), (WindowSize{33, 101}));
  auto seen = facts(must(child.pty().read_all(patience)));
  EXPECT_EQ(seen["winsize"], "33 101");
  EXPECT_TRUE(must(child.wait(patience)).success());

  auto unset = must(helper("pty-check").pty({.rows = 0, .cols = 0}).spawn());
  EXPECT_EQ(facts(must(unset.pty().read_all(patience)))["winsize"], "0 0");
  EXPECT_TRUE(must(unset.wait(patience)).success());
}

TEST_F(Pty, ResizeFromTheParentSendsSigwinch) {
  auto child = must(helper("pty-winch", {"2"}).pty({.rows = 24, .cols = 80}).spawn());
  std::string seen;
  TT_ASSERT_OK(child.pty().read_until(seen, "size 24 80\r\n", patience));
  TT_ASSERT_OK(child.pty().set_window_size({50, 132}));
  TT_ASSERT_OK(child.pty().read_until(seen, "winch 50 132\r\n", patience));
  EXPECT_EQ(must(child.pty().window_size()), (WindowSize{50, 132}));
  TT_ASSERT_OK(child.pty().set_window_size({10, 20}));
  TT_ASSERT_OK(child.pty().read_until(seen, "winch 10 20\r\n", patience));
  EXPECT_EQ(seen, "size 24 80\r\nwinch 50 132\r\nwinch 10 20\r\n");
  EXPECT_TRUE(must(child.wait(patience)).success());
}

TEST_F(Pty, InputIsEchoedAndOutputNewlinesBecomeCrLf) {
  auto child = must(helper("pty-read-line").pty().spawn());
  TT_ASSERT_OK(child.pty().write_all("hello\n", patience));
  // The terminal echoes the line (its "\n" shown as "\r\n"), always before
  // what the child writes after reading it (n_tty's write flushes pending
  // echoes first); every "\n" the child writes arrives as "\r\n" (ONLCR).
  auto text = must(child.pty().read_all(patience));
  EXPECT_EQ(text, "hello\r\ngot 6 bytes: hello\r\n\r\n");
  EXPECT_TRUE(must(child.wait(patience)).success());
}

TEST_F(Pty, EchoOffAndRawMode) {
  auto quiet = must(helper("pty-read-line").pty({.echo = false}).spawn());
  TT_ASSERT_OK(quiet.pty().write_all("secret\n", patience));
  EXPECT_EQ(must(quiet.pty().read_all(patience)), "got 7 bytes: secret\r\n\r\n");
  EXPECT_TRUE(must(quiet.wait(patience)).success());

  // Raw: no echo, no line discipline, "\n" stays "\n" both ways.
  auto raw = must(helper("pty-read-line").pty({.raw = true}).spawn());
  TT_ASSERT_OK(raw.pty().write_all("raw\n", patience));
  EXPECT_EQ(must(raw.pty().read_all(patience)), "got 4 bytes: raw\n\n");
  EXPECT_TRUE(must(raw.wait(patience)).success());

  // Turned off after the start, through the master.
  auto later = must(helper("pty-read-line").pty().spawn());
  TT_ASSERT_OK(later.pty().set_echo(false));
  TT_ASSERT_OK(later.pty().write_all("later\n", patience));
  EXPECT_EQ(must(later.pty().read_all(patience)), "got 6 bytes: later\r\n\r\n");
  EXPECT_TRUE(must(later.wait(patience)).success());
}

TEST_F(Pty, SendEofEndsTheChildsInput) {
  auto child = must(helper("echo").pty({.echo = false}).spawn());
  TT_ASSERT_OK(child.pty().write_all("line\n", patience));
  std::string seen;
  TT_ASSERT_OK(child.pty().read_until(seen, "line\r\n", patience));
  TT_ASSERT_OK(child.pty().send_eof(patience));  // read() returns 0: the echo helper exits
  EXPECT_EQ(must(child.pty().read_all(patience)), "");
  EXPECT_TRUE(must(child.wait(patience)).success());

  // After part of a line, one EOF hands the part over; a second ends input.
  auto partial = must(helper("pty-read-line").pty({.echo = false}).spawn());
  TT_ASSERT_OK(partial.pty().write_all("abc", patience));
  TT_ASSERT_OK(partial.pty().send_eof(patience));
  TT_ASSERT_OK(partial.pty().send_eof(patience));
  EXPECT_EQ(must(partial.pty().read_all(patience)), "got 3 bytes: abc\r\n");
  EXPECT_TRUE(must(partial.wait(patience)).success());

  auto raw = must(helper("sleep", {"0"}).pty({.raw = true}).spawn());
  auto refused = raw.pty().send_eof();
  ASSERT_FALSE(refused);
  TT_EXPECT_ERROR(refused, std::errc::invalid_argument);
  EXPECT_NE(refused.error().message().find("raw mode"), std::string::npos);
  EXPECT_TRUE(must(raw.wait(patience)).success());
}

TEST_F(Pty, EndOfStreamAfterTheChildExits) {
  auto child = must(Command("sh").args({"-c", "echo bye"}).pty().spawn());
  EXPECT_TRUE(must(child.wait(patience)).success());
  // The output written before the exit is still there, then EIO, which
  // reads as 0, again and again.
  std::string seen;
  TT_ASSERT_OK(child.pty().read_until(seen, "bye\r\n", patience));
  std::array<std::byte, 16> buf;
  EXPECT_EQ(must(child.pty().read(buf, patience)), 0u);
  EXPECT_EQ(must(child.pty().try_read(buf)), 0u);
  auto exact = child.pty().read_exact(buf, patience);
  ASSERT_FALSE(exact);
  TT_EXPECT_ERROR(exact, tether::errc::end_of_stream);
  auto more = child.pty().read_until(seen, "never", patience);
  ASSERT_FALSE(more);
  TT_EXPECT_ERROR(more, tether::errc::end_of_stream);
  // Writing to a terminal nobody holds is a broken pipe, not a silent discard.
  auto w = child.pty().write_all("anyone?\n", patience);
  ASSERT_FALSE(w);
  TT_EXPECT_ERROR(w, std::errc::broken_pipe);
  EXPECT_NE(w.error().message().find(child.pty().slave_name()), std::string::npos)
      << w.error().message();
}

TEST_F(Pty, DeadlineTimesOutAndTryFormsWouldBlock) {
  // Raw mode: a line discipline in canonical mode throws away input past
  // 4095 bytes to a line, so only a raw terminal fills up for good when the
  // child does not read.
  auto child = must(helper("sleep", {"20000"}).pty({.raw = true}).spawn());
  std::array<std::byte, 16> buf;
  auto r = child.pty().read(buf, 20ms);
  ASSERT_FALSE(r);
  TT_EXPECT_ERROR(r, std::errc::timed_out);
  auto t = child.pty().try_read(buf);
  ASSERT_FALSE(t);
  TT_EXPECT_ERROR(t, std::errc::resource_unavailable_try_again);
  // The terminal takes some KiB, then a try_write would block and a write
  // with a deadline times out. The kernel moves bytes into the line
  // discipline's buffer in the background, so room may come back once or
  // twice before the terminal stays full: loop until a deadline write fails.
  std::string block(1024, 'x');
  bool timed_out = false;
  for (int i = 0; i < 1024 && !timed_out; ++i) {
    auto w = child.pty().try_write(tether_test::bytes(block));
    if (w) continue;
    ASSERT_EQ(w.error(), std::errc::resource_unavailable_try_again) << w.error().message();
    auto all = child.pty().write_all(block, 20ms);
    if (!all) {
      ASSERT_EQ(all.error(), std::errc::timed_out) << all.error().message();
      timed_out = true;
    }
  }
  EXPECT_TRUE(timed_out);
  EXPECT_EQ(must(child.kill()).signal(), SIGKILL);
}

TEST_F(Pty, StderrCanBeKeptApart) {
  auto child = must(helper("stderr").pty().stderr_to(Stdio::pipe()).spawn());
  ASSERT_TRUE(child.stderr_fd().valid());
  auto out = must(child.communicate({}, patience));
  EXPECT_EQ(out.out, "to stdout\r\n");
  EXPECT_EQ(out.err, "to stderr\n");
  EXPECT_TRUE(out.status.success());
}

TEST_F(Pty, OneStreamOnStdioPtyGetsADefaultTerminal) {
  auto child = must(helper("pty-check")
                        .stdin_from(Stdio::null())
                        .stdout_to(Stdio::pty())
                        .stderr_to(Stdio::null())
                        .spawn());
  ASSERT_TRUE(child.pty().valid());
  auto seen = facts(must(child.pty().read_all(patience)));
  EXPECT_EQ(seen["isatty"], "0 1 0");
  EXPECT_EQ(seen["devtty"], "ok");  // the controlling terminal all the same
  EXPECT_EQ(must(child.pty().window_size()), (WindowSize{24, 80}));
  EXPECT_TRUE(must(child.wait(patience)).success());
}

TEST_F(Pty, OutputTypesTheInputAndEndsIt) {
  // cat reads to end of file: output() types ^D after the input.
  auto out = must(Command("cat").pty({.echo = false}).output("one\ntwo\n", patience));
  EXPECT_EQ(out.out, "one\r\ntwo\r\n");
  EXPECT_TRUE(out.status.success());
  // Input that does not end a line needs two: both are typed.
  auto partial = must(Command("cat").pty({.echo = false}).output("no newline", patience));
  EXPECT_EQ(partial.out, "no newline");
  EXPECT_TRUE(partial.status.success());
  // With echo, the input shows up too.
  auto echoed = must(helper("pty-read-line").pty().output("hi\n", patience));
  EXPECT_EQ(echoed.out, "hi\r\ngot 3 bytes: hi\r\n\r\n");
}

TEST_F(Pty, ConflictingProcessGroupIsRefused) {
  auto leader = must(helper("sleep", {"20000"}).new_process_group().spawn());
  auto r = helper("exit", {"0"}).pty().process_group(leader.pid()).spawn();
  ASSERT_FALSE(r);
  TT_EXPECT_ERROR(r, std::errc::invalid_argument);
  EXPECT_NE(r.error().message().find("new session"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find(std::to_string(leader.pid())), std::string::npos);
  // new_process_group() is implied, not a conflict.
  auto own = must(helper("exit", {"0"}).pty().new_process_group().spawn());
  EXPECT_EQ(own.process_group(), own.pid());
  EXPECT_TRUE(must(own.wait(patience)).success());
  EXPECT_EQ(must(leader.kill()).signal(), SIGKILL);
}

TEST_F(Pty, MasterIsCloseOnExecNonBlockingAndNotInTheChild) {
  auto child = must(helper("fds").pty().spawn());
  int flags = ::fcntl(child.pty().fd(), F_GETFD);
  EXPECT_TRUE(flags & FD_CLOEXEC);
  EXPECT_TRUE(::fcntl(child.pty().fd(), F_GETFL) & O_NONBLOCK);
  std::istringstream in(must(child.pty().read_all(patience)));
  std::vector<std::string> fds;
  for (std::string line; std::getline(in, line);) fds.push_back(line);
  // 0, 1, 2 and the directory the helper lists: no master, no extra slave.
  EXPECT_LE(fds.size(), 4u);
  EXPECT_TRUE(must(child.wait(patience)).success());
}

TEST_F(Pty, NoDescriptorLeaksAcrossSpawnsAndFailures) {
  int before = must(tether::count_open_fds());
  for (int i = 0; i < 50; ++i) {
    auto bad = Command("/no/such/prog").pty().spawn();
    ASSERT_FALSE(bad);
    TT_EXPECT_ERROR(bad, std::errc::no_such_file_or_directory);
    auto ok = must(helper("exit", {"0"}).pty().spawn());
    EXPECT_TRUE(must(ok.wait(patience)).success());
  }
  EXPECT_EQ(must(tether::count_open_fds()), before);
}

TEST_F(Pty, MovesWithItsProcessAndOpensAlone) {
  auto child = must(helper("pty-check").pty().spawn());
  int fd = child.pty().fd();
  tether::Process moved = std::move(child);
  // The moved-from Process holds no process (not_spawned, docs/errors.md),
  // so no terminal either: looking at it after the move is the point here.
  EXPECT_FALSE(child.pty().valid());  // NOLINT(bugprone-use-after-move): documented state
  EXPECT_EQ(moved.pty().fd(), fd);
  EXPECT_FALSE(must(moved.pty().read_all(patience)).empty());
  EXPECT_TRUE(must(moved.wait(patience)).success());

  // A pair without a child: the slave is this process's to hand out.
  auto pair = must(tether::Pty::open({.rows = 5, .cols = 7, .raw = true}));
  EXPECT_TRUE(::fcntl(pair.slave.get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(::isatty(pair.slave.get()), 1);
  winsize ws{};
  ASSERT_EQ(::ioctl(pair.slave.get(), TIOCGWINSZ, &ws), 0);
  EXPECT_EQ(ws.ws_row, 5);
  EXPECT_EQ(ws.ws_col, 7);
  TT_ASSERT_OK(pair.master.write_all("to the slave"));
  std::string got;
  char c;
  while (got.size() < 12 && ::read(pair.slave.get(), &c, 1) == 1) got += c;
  EXPECT_EQ(got, "to the slave");
}
