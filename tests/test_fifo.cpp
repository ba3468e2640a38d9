#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "support.hpp"

using namespace std::chrono_literals;
using tether::Command;
using tether::Fifo;
using tether_test::Clean;
using tether_test::must;

namespace {

std::filesystem::path fifo_path() {
  return std::filesystem::temp_directory_path() / tether_test::unique_name("tether-fifo");
}

std::string read_string(const tether::PipeReader& r, tether::Deadline d = 10s) {
  std::string s(256, '\0');
  auto n = r.read(std::as_writable_bytes(std::span(s)), d);
  s.resize(n ? *n : 0);
  return s;
}

}  // namespace

class FifoTest : public Clean {
 protected:
  void TearDown() override {
    EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(path)))
        << path << " was left behind";
    std::filesystem::remove(path);
    Clean::TearDown();
  }
  std::filesystem::path path = fifo_path();
};

TEST_F(FifoTest, CreatedWithMode0600AndRemovedByItsOwner) {
  mode_t old = ::umask(0);  // a permissive umask must not widen it
  {
    auto fifo = must(Fifo::create(path));
    ::umask(old);
    EXPECT_TRUE(fifo.owns());
    struct stat st {};
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISFIFO(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(FifoTest, RestrictiveUmaskStillGivesTheModeAskedFor) {
  mode_t old = ::umask(077);
  auto fifo = must(Fifo::create(path, 0640));
  ::umask(old);
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
}

TEST_F(FifoTest, ExistingFifoIsReusedAndNotOwned) {
  auto first = must(Fifo::create(path));
  {
    auto second = must(Fifo::create(path));
    EXPECT_FALSE(second.owns());
  }
  EXPECT_TRUE(std::filesystem::exists(path));  // the second did not remove it
}

TEST_F(FifoTest, RegularFileAtThePathIsRefused) {
  std::ofstream(path) << "not a fifo";
  auto fifo = Fifo::create(path);
  ASSERT_FALSE(fifo);
  EXPECT_NE(fifo.error().message().find("exists and is not a FIFO"), std::string::npos)
      << fifo.error().message();
  EXPECT_TRUE(std::filesystem::is_regular_file(path));  // untouched
  std::filesystem::remove(path);
}

TEST_F(FifoTest, SymbolicLinkAtThePathIsRefused) {
  auto target = fifo_path();
  ASSERT_EQ(::mkfifo(target.c_str(), 0600), 0);
  std::filesystem::create_symlink(target, path);
  auto fifo = Fifo::create(path);
  ASSERT_FALSE(fifo);
  EXPECT_NE(fifo.error().message().find("symbolic link"), std::string::npos)
      << fifo.error().message();
  std::filesystem::remove(path);
  std::filesystem::remove(target);
}

TEST_F(FifoTest, FifoOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to plant a FIFO owned by nobody";
  ASSERT_EQ(::mkfifo(path.c_str(), 0666), 0);
  ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
  auto fifo = Fifo::create(path);
  ASSERT_FALSE(fifo);
  EXPECT_EQ(fifo.error(), std::errc::operation_not_permitted);
  EXPECT_NE(fifo.error().message().find("belongs to uid 65534"), std::string::npos);
  std::filesystem::remove(path);
}

TEST_F(FifoTest, NonBlockingWriterWithoutReaderSaysNoReader) {
  auto fifo = must(Fifo::create(path));
  auto w = fifo.open_writer(tether::Deadline::immediate());
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error(), std::errc::no_such_device_or_address);
  EXPECT_EQ(w.error().message(), "open FIFO " + path.string() +
                                     " for writing: no reader: No such device or address (ENXIO)");
  auto timed = fifo.open_writer(50ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error(), std::errc::no_such_device_or_address);
}

TEST_F(FifoTest, WriterWithDeadlineWaitsForAReader) {
  auto fifo = must(Fifo::create(path));
  // An unrelated process opens the read end a little later.
  auto cat = must(Command("sh")
                      .args({"-c", "sleep 0.2; exec cat \"$0\"", path.string()})
                      .stdout_to(tether::Stdio::pipe())
                      .die_with_parent()
                      .spawn());
  auto w = must(fifo.open_writer(20s));
  TT_ASSERT_OK(w.write_all("late reader\n"));
  TT_ASSERT_OK(w.close());
  auto out = must(cat.communicate({}, 20s));
  EXPECT_EQ(out.out, "late reader\n");
}

TEST_F(FifoTest, ReaderSeesEndOfStreamWhenTheLastWriterCloses) {
  auto fifo = must(Fifo::create(path));
  auto r = must(fifo.open_reader(tether::Deadline::immediate()));
  auto w1 = must(fifo.open_writer(tether::Deadline::immediate()));
  auto w2 = must(fifo.open_writer(tether::Deadline::immediate()));
  TT_ASSERT_OK(w1.write_all("one "));
  TT_ASSERT_OK(w1.close());
  TT_ASSERT_OK(w2.write_all("two"));
  EXPECT_EQ(read_string(r), "one two");
  TT_ASSERT_OK(w2.close());
  EXPECT_EQ(must(r.read_all(5s)), "");  // end of stream, not a timeout
}

TEST_F(FifoTest, KeepListeningReaderOutlivesItsWriters) {
  auto fifo = must(Fifo::create(path));
  auto r = must(fifo.open_reader(tether::Deadline::never(), {.keep_listening = true}));
  EXPECT_TRUE(r.keeps_listening());
  for (std::string word : {"first", "second", "third"}) {
    // Each writer is a separate shell process that comes and goes.
    EXPECT_TRUE(
        must(Command("sh").args({"-c", "printf %s \"$1\" > \"$0\"", path.string(), word}).status())
            .success());
    std::string got;
    while (got.size() < word.size()) got += read_string(r);
    EXPECT_EQ(got, word);
  }
  // No writer left: the reader waits instead of seeing end of stream.
  std::array<std::byte, 8> buf;
  auto idle = r.read(buf, 50ms);
  ASSERT_FALSE(idle);
  EXPECT_EQ(idle.error(), std::errc::timed_out);
}

TEST_F(FifoTest, WriteAfterTheReaderDiedIsBrokenPipe) {
  auto fifo = must(Fifo::create(path));
  auto reader = must(Command("sh")
                         .args({"-c", "head -c 1 \"$0\" > /dev/null", path.string()})
                         .die_with_parent()
                         .spawn());
  auto w = must(fifo.open_writer(20s));
  TT_ASSERT_OK(w.write_all("x"));
  EXPECT_TRUE(must(reader.wait(20s)).success());
  auto broken = w.write_all("nobody reads this");
  ASSERT_FALSE(broken);
  EXPECT_EQ(broken.error(), std::errc::broken_pipe);
}

TEST_F(FifoTest, ShellCanBeEitherEnd) {
  auto fifo = must(Fifo::create(path));
  // echo hi > fifo, read by tether.
  auto echo = must(Command("sh")
                       .args({"-c", "echo hi from the shell > \"$0\"", path.string()})
                       .die_with_parent()
                       .spawn());
  {
    auto r = must(fifo.open_reader());
    EXPECT_EQ(must(r.read_all(10s)), "hi from the shell\n");
  }  // closed: with a reader open, the writer below would not wait for cat
  EXPECT_TRUE(must(echo.wait(10s)).success());
  // tether writes, cat reads.
  auto cat = must(
      Command("cat").arg(path.string()).stdout_to(tether::Stdio::pipe()).die_with_parent().spawn());
  auto w = must(fifo.open_writer(20s));
  TT_ASSERT_OK(w.write_all("hi from tether\n"));
  TT_ASSERT_OK(w.close());
  EXPECT_EQ(must(cat.communicate({}, 10s)).out, "hi from tether\n");
}

TEST_F(FifoTest, PythonCanBeEitherEnd) {
  auto fifo = must(Fifo::create(path));
  auto writer = must(Command("python3")
                         .args({"-c",
                                "import os, sys\n"
                                "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
                                "os.write(fd, b'hello from python')\n"
                                "os.close(fd)\n",
                                path.string()})
                         .die_with_parent()
                         .spawn());
  {
    auto r = must(fifo.open_reader());
    EXPECT_EQ(must(r.read_all(10s)), "hello from python");
  }  // closed: with a reader open, the writer below would not wait for python
  EXPECT_TRUE(must(writer.wait(10s)).success());

  auto reader = must(Command("python3")
                         .args({"-c",
                                "import os, sys\n"
                                "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
                                "data = b''\n"
                                "while chunk := os.read(fd, 4096):\n"
                                "    data += chunk\n"
                                "print(data.decode(), end='')\n",
                                path.string()})
                         .stdout_to(tether::Stdio::pipe())
                         .die_with_parent()
                         .spawn());
  auto w = must(fifo.open_writer(20s));
  TT_ASSERT_OK(w.write_all("hello from tether"));
  TT_ASSERT_OK(w.close());
  EXPECT_EQ(must(reader.communicate({}, 20s)).out, "hello from tether");
}

TEST_F(FifoTest, RemovalLeavesAReplacedPathAlone) {
  auto fifo = must(Fifo::create(path));
  std::filesystem::remove(path);
  std::ofstream(path) << "someone else's file";
  auto r = fifo.remove();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("left alone"), std::string::npos);
  EXPECT_TRUE(std::filesystem::is_regular_file(path));
  std::filesystem::remove(path);
}

TEST_F(FifoTest, AttachDoesNotOwn) {
  auto owner = must(Fifo::create(path));
  {
    auto attached = must(Fifo::attach(path));
    EXPECT_FALSE(attached.owns());
  }
  EXPECT_TRUE(std::filesystem::exists(path));
  auto missing = Fifo::attach(fifo_path());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error(), std::errc::no_such_file_or_directory);
}

// ---------------------------------------------------------------- ownership (NamedObject)

namespace {

ino_t inode_of(const std::filesystem::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 ? st.st_ino : 0;
}

}  // namespace

// Another FIFO of ours in its place (same type, same owner, another
// inode): not the one this Fifo made, so neither remove() nor the
// destructor touches it.
TEST_F(FifoTest, RemovalLeavesAnotherFifoInItsPlaceAlone) {
  {
    auto fifo = must(Fifo::create(path));
    ASSERT_TRUE(fifo.owns());
    auto other = fifo_path();
    ASSERT_EQ(::mkfifo(other.c_str(), 0600), 0);
    std::filesystem::rename(other, path);  // swapped under the owner's feet
    TT_EXPECT_ERROR(fifo.remove(), std::errc::file_exists);
    EXPECT_FALSE(fifo.owns());
  }
  EXPECT_TRUE(std::filesystem::is_fifo(path));
  std::filesystem::remove(path);

  ino_t swapped = 0;
  {
    auto fifo = must(Fifo::create(path));
    auto other = fifo_path();
    ASSERT_EQ(::mkfifo(other.c_str(), 0600), 0);
    std::filesystem::rename(other, path);
    swapped = inode_of(path);
  }  // the destructor: same rule
  EXPECT_EQ(inode_of(path), swapped);
  std::filesystem::remove(path);
}

TEST_F(FifoTest, ReleaseKeepsTheFifo) {
  {
    auto fifo = must(Fifo::create(path));
    fifo.release();
    EXPECT_FALSE(fifo.owns());
  }
  EXPECT_TRUE(std::filesystem::is_fifo(path));
  std::filesystem::remove(path);
}

TEST_F(FifoTest, MovesTransferOwnership) {
  auto first = must(Fifo::create(path));
  Fifo second = std::move(first);
  EXPECT_FALSE(first.owns());  // NOLINT(bugprone-use-after-move): the moved-from state is the point
  EXPECT_TRUE(second.owns());
  { Fifo gone = std::move(first); }  // destroying a moved-from Fifo removes nothing
  EXPECT_TRUE(std::filesystem::is_fifo(path));
  Fifo third;
  third = std::move(second);
  EXPECT_TRUE(third.owns());
  EXPECT_EQ(third.path(), path);
  TT_ASSERT_OK(third.remove());
  EXPECT_FALSE(std::filesystem::exists(path));
}
