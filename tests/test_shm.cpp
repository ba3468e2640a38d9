// Shared memory: POSIX, System V, a mapped file, memfd; leases and cleanup.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>

#include "support.hpp"
#include "tether/shm.hpp"

using namespace std::chrono_literals;
using tether::Access;
using tether_test::must;
using tether_test::run_in_child;

namespace {

class Shm : public tether_test::Clean {};

bool shm_exists(const std::string& name) {
  struct stat st {};
  return ::lstat(("/dev/shm" + name).c_str(), &st) == 0;
}

mode_t shm_mode(const std::string& name) {
  struct stat st {};
  if (::lstat(("/dev/shm" + name).c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

// The total size of the file system holding `path`: asking for more than
// that fails at once, without first filling it.
std::size_t fs_total(const char* path) {
  struct statvfs vfs {};
  if (::statvfs(path, &vfs) != 0) return 0;
  return static_cast<std::size_t>(vfs.f_blocks) * vfs.f_frsize;
}

std::filesystem::path temp_path(const std::string& stem) {
  return std::filesystem::temp_directory_path() / tether_test::unique_name(stem);
}

// Removes a path when the test ends, however it ends (a failed ASSERT
// returns early): what a test plants by hand is never left behind.
struct RemoveAtEnd {
  std::string path;
  ~RemoveAtEnd() { ::unlink(path.c_str()); }
};

// Waits for one byte from a child (its "ready"), or fails.
bool await_byte(const tether::Fd& fd) {
  std::byte b{};
  auto n = tether::wait_fd(fd.get(), POLLIN, 30s, "a child's ready byte");
  return n && ::read(fd.get(), &b, 1) == 1;
}

}  // namespace

// ---------------------------------------------------------------- POSIX

TEST_F(Shm, PosixSegmentIsSharedWithAnotherProcessByName) {
  auto name = tether_test::unique_posix_name("tt-shm");
  auto seg = must(tether::PosixSharedMemory::create(name, 8192));
  EXPECT_TRUE(seg.owns());
  EXPECT_EQ(must(seg.size()), 8192u);
  auto map = must(seg.map());
  ASSERT_EQ(map.size(), 8192u);
  auto* counter = must(map.construct<std::atomic<long>>(0));
  EXPECT_EQ(run_in_child([&] {
              auto other = tether::PosixSharedMemory::open(name, Access::read_write, 8192);
              if (!other || other->owns()) return 1;
              auto m = other->map();
              if (!m) return 2;
              auto c = m->view<std::atomic<long>>();
              if (!c) return 3;
              (*c)->fetch_add(41);
              std::memcpy(m->data() + 4096, "from the child", 15);
              return 0;
            }),
            0);
  EXPECT_EQ(counter->load(), 41);
  EXPECT_STREQ(reinterpret_cast<const char*>(map.data() + 4096), "from the child");
  // Fresh memory is zero-filled.
  EXPECT_EQ(map.data()[8191], std::byte{0});
}

TEST_F(Shm, PosixCreateSetsExactlyTheModeAskedWhateverTheUmask) {
  auto name = tether_test::unique_posix_name("tt-shm-mode");
  mode_t old = ::umask(077);
  auto seg = tether::PosixSharedMemory::create(name, 100, 0640);
  ::umask(old);
  TT_ASSERT_OK(seg);
  // 0640, plus the mark of a segment tether made (the sticky bit).
  EXPECT_EQ(shm_mode(name), 0640u | S_ISVTX);
  auto def = must(tether::PosixSharedMemory::create(tether_test::unique_posix_name("tt-shm"), 1));
  EXPECT_EQ(shm_mode(def.name()) & 0777, 0600u);
}

TEST_F(Shm, PosixOwnerRemovesTheNameAndReleaseKeepsIt) {
  auto name = tether_test::unique_posix_name("tt-shm-own");
  {
    auto seg = must(tether::PosixSharedMemory::create(name, 64));
    EXPECT_TRUE(shm_exists(name));
  }
  EXPECT_FALSE(shm_exists(name));
  {
    auto seg = must(tether::PosixSharedMemory::create(name, 64));
    seg.release();
  }
  EXPECT_TRUE(shm_exists(name));
  auto again = must(tether::PosixSharedMemory::open(name));
  EXPECT_FALSE(again.owns());
  TT_ASSERT_OK(again.remove());
  EXPECT_FALSE(shm_exists(name));
  // A mapping outlives both the name and the descriptor.
  auto seg = must(tether::PosixSharedMemory::create(name, 64));
  auto map = must(seg.map());
  TT_ASSERT_OK(seg.remove());
  TT_ASSERT_OK(seg.close());
  map.data()[0] = std::byte{7};
  EXPECT_EQ(map.data()[0], std::byte{7});
}

TEST_F(Shm, PosixBadInputIsRefusedWithAClearError) {
  auto name = tether_test::unique_posix_name("tt-shm-bad");
  auto seg = must(tether::PosixSharedMemory::create(name, 4096));
  auto taken = tether::PosixSharedMemory::create(name, 4096);
  TT_ASSERT_ERROR(taken, std::errc::file_exists);
  EXPECT_NE(taken.error().message().find(name), std::string::npos) << taken.error().message();
  TT_EXPECT_ERROR(tether::PosixSharedMemory::create("", 1), std::errc::invalid_argument);
  TT_EXPECT_ERROR(tether::PosixSharedMemory::create("/a/b", 1), std::errc::invalid_argument);
  TT_EXPECT_ERROR(tether::PosixSharedMemory::create("/" + std::string(300, 'x'), 1),
                  std::errc::invalid_argument);
  auto zero = tether::PosixSharedMemory::create(tether_test::unique_posix_name("tt-shm"), 0);
  TT_ASSERT_ERROR(zero, std::errc::invalid_argument);
  EXPECT_NE(zero.error().message().find("at least one byte"), std::string::npos);
  TT_EXPECT_ERROR(tether::PosixSharedMemory::open(tether_test::unique_posix_name("tt-none")),
                  std::errc::no_such_file_or_directory);
  // Smaller than the reader expects; a map past the end.
  auto small = tether::PosixSharedMemory::open(name, Access::read_write, 8192);
  TT_ASSERT_ERROR(small, std::errc::invalid_argument);
  EXPECT_NE(small.error().message().find("4096 bytes"), std::string::npos);
  auto past = seg.map(0, 8192);
  TT_ASSERT_ERROR(past, std::errc::invalid_argument);
  EXPECT_NE(past.error().message().find("past its end"), std::string::npos);
  TT_EXPECT_ERROR(seg.map(100, 10), std::errc::invalid_argument);  // offset not page-aligned
  // Read-only: no writable mapping, no construction.
  auto ro = must(tether::PosixSharedMemory::open(name, Access::read_only));
  TT_EXPECT_ERROR(ro.map(Access::read_write), std::errc::permission_denied);
  auto rom = must(ro.map(Access::read_only));
  TT_EXPECT_ERROR(rom.construct<int>(1), std::errc::permission_denied);
  // Placing an object: bounds and alignment.
  auto map = must(seg.map());
  TT_EXPECT_ERROR(map.view<std::uint64_t>(4092), std::errc::invalid_argument);
  TT_EXPECT_ERROR(map.view<std::uint64_t>(3), std::errc::invalid_argument);
  TT_EXPECT_ERROR(map.view<std::uint64_t>(std::size_t(-4)), std::errc::invalid_argument);
  TT_ASSERT_OK(map.view<std::uint64_t>(4088));
}

TEST_F(Shm, PosixOpenRefusesAFifoPlantedInDevShmWithoutBlocking) {
  auto name = tether_test::unique_posix_name("tt-shm-fifo");
  ASSERT_EQ(::mkfifo(("/dev/shm" + name).c_str(), 0600), 0);
  RemoveAtEnd planted{"/dev/shm" + name};
  for (auto access : {Access::read_only, Access::read_write}) {
    auto seg = tether::PosixSharedMemory::open(name, access);
    TT_EXPECT_ERROR(seg, std::errc::invalid_argument);
  }
  auto bad = tether::PosixSharedMemory::create("a/b", 1);
  TT_ASSERT_ERROR(bad, std::errc::invalid_argument);
  EXPECT_EQ(bad.error().message().find("name name"), std::string::npos) << bad.error().message();
}

TEST_F(Shm, AnExclusiveFlockHeldElsewhereFailsTheOpenInsteadOfHangingIt) {
  auto name = tether_test::unique_posix_name("tt-shm-flock");
  auto seg = must(tether::PosixSharedMemory::create(name, 4096));
  int fd = ::open(("/dev/shm" + name).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  // Our own lease (shared) must go first: another open file description
  // of ours takes the exclusive lock only once the creator has closed.
  TT_ASSERT_OK(seg.close());
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  auto t0 = std::chrono::steady_clock::now();
  auto blocked = tether::PosixSharedMemory::open(name);
  TT_ASSERT_ERROR(blocked, std::errc::resource_unavailable_try_again);
  EXPECT_NE(blocked.error().message().find("exclusive lock"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);
  ::close(fd);
  TT_ASSERT_OK(tether::PosixSharedMemory::open(name));
}

TEST_F(Shm, AMemfdLargerThanTheMemoryIsRefusedNotAnOomKill) {
  // Without the check, posix_fallocate on a memfd allocates until the
  // OOM killer strikes (tmpfs pages are memory).
  auto huge = tether::Memfd::create(std::size_t(1) << 50, "tt-huge");
  TT_ASSERT_ERROR(huge, std::errc::not_enough_memory);
  EXPECT_NE(huge.error().message().find("memory available"), std::string::npos);
  TT_EXPECT_ERROR(tether::Memfd::create(1, std::string(300, 'x')), std::errc::invalid_argument);
}

TEST_F(Shm, PosixCreateBeyondTheFreeSpaceIsEnospcAndLeavesNothing) {
  auto name = tether_test::unique_posix_name("tt-shm-full");
  std::size_t too_big = fs_total("/dev/shm") + (std::size_t(1) << 30);
  auto seg = tether::PosixSharedMemory::create(name, too_big);
  TT_ASSERT_ERROR(seg, std::errc::no_space_on_device);
  EXPECT_NE(seg.error().message().find(name), std::string::npos) << seg.error().message();
  EXPECT_NE(seg.error().message().find("nothing was made"), std::string::npos);
  EXPECT_FALSE(shm_exists(name));
  // Growing is reserved the same way, and keeps the old size on failure.
  auto ok = must(tether::PosixSharedMemory::create(name, 4096));
  TT_EXPECT_ERROR(ok.resize(too_big), std::errc::no_space_on_device);
  EXPECT_EQ(must(ok.size()), 4096u);
  TT_ASSERT_OK(ok.resize(std::size_t{3} * 4096));
  EXPECT_EQ(must(ok.size()), 3u * 4096);
  TT_ASSERT_OK(ok.map(8192, 4096));
}

TEST_F(Shm, AnotherUsersSegmentIsAccessDenied) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a process as nobody";
  auto name = tether_test::unique_posix_name("tt-shm-user");
  auto seg = must(tether::PosixSharedMemory::create(name, 4096));
  EXPECT_EQ(run_in_child([&] {
              if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;
              auto other = tether::PosixSharedMemory::open(name, Access::read_only);
              if (other) return 1;
              if (!(other.error() == std::errc::permission_denied)) return 2;
              if (other.error().message().find(name) == std::string::npos) return 3;
              // And nobody's cleanup never touches root's segment.
              auto removed = tether::remove_abandoned_posix_shared_memory("/tt-shm-user");
              if (!removed || !removed->empty()) return 4;
              return 0;
            }),
            0);
  EXPECT_TRUE(shm_exists(name));
}

TEST_F(Shm, AbandonedSegmentsAreToldFromLiveOnesAndOnlyTheyAreRemoved) {
  std::string stem = tether_test::unique_name("/tt-lease");
  std::string dead = stem + "-dead", live = stem + "-live", foreign = stem + "-foreign";
  // A holder killed -9: its segment, released so its destructor would not
  // have removed it anyway, is abandoned.
  auto killed = tether::fork([&] {
    auto s = tether::PosixSharedMemory::create(dead, 4096);
    if (!s) return 1;
    ::raise(SIGKILL);  // its destructor never runs
    return 2;
  });
  TT_ASSERT_OK(killed);
  auto st = must(killed->wait(30s));
  EXPECT_EQ(st.signal(), SIGKILL);
  // A holder alive, in another process; and one whose opener is alive but
  // whose creator is gone.
  auto [ready_r, ready_w] = must(tether::make_pipe());
  auto holder = tether::fork([&, w = ready_w.get()] {
    auto s = tether::PosixSharedMemory::create(live, 4096);
    if (!s) return 1;
    if (::write(w, "r", 1) != 1) return 2;
    ::pause();
    return 0;
  });
  TT_ASSERT_OK(holder);
  ready_w.reset();
  ASSERT_TRUE(await_byte(ready_r));
  // One kept on purpose (release()) by a process that then ended: its
  // mark is gone, and the cleanup leaves it alone.
  std::string kept = stem + "-kept";
  RemoveAtEnd kept_file{"/dev/shm" + kept}, foreign_file{"/dev/shm" + foreign};
  RemoveAtEnd dead_file{"/dev/shm" + dead}, live_file{"/dev/shm" + live};
  EXPECT_EQ(run_in_child([&] {
              auto s = tether::PosixSharedMemory::create(kept, 4096);
              if (!s) return 1;
              s->release();
              return 0;
            }),
            0);
  // A segment another library made (no lease, no mark): never removed.
  int fd = ::shm_open(foreign.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);

  auto list = must(tether::posix_shared_memory_list());
  auto find = [&](const std::string& n) {
    return std::find_if(list.begin(), list.end(), [&](const auto& i) { return i.name == n; });
  };
  ASSERT_NE(find(dead), list.end());
  ASSERT_NE(find(live), list.end());
  ASSERT_NE(find(foreign), list.end());
  EXPECT_TRUE(find(dead)->made_by_tether);
  EXPECT_FALSE(find(dead)->held);
  EXPECT_TRUE(find(live)->held);
  EXPECT_FALSE(find(foreign)->made_by_tether);
  EXPECT_EQ(find(live)->size, 4096u);

  auto removed = must(tether::remove_abandoned_posix_shared_memory(stem));
  EXPECT_EQ(removed, std::vector<std::string>{dead});
  EXPECT_FALSE(shm_exists(dead));
  EXPECT_TRUE(shm_exists(live));
  EXPECT_TRUE(shm_exists(foreign));
  EXPECT_TRUE(shm_exists(kept));
  // An opener holds it too: the live one stays while anyone has it open.
  auto mine = must(tether::PosixSharedMemory::open(live));
  TT_ASSERT_OK(holder->kill());
  EXPECT_TRUE(must(tether::remove_abandoned_posix_shared_memory(stem)).empty());
  TT_ASSERT_OK(mine.close());
  EXPECT_EQ(must(tether::remove_abandoned_posix_shared_memory(stem)),
            std::vector<std::string>{live});
}

// ---------------------------------------------------------------- memfd

TEST_F(Shm, MemfdIsSharedWithForkChildrenAndNamesNothing) {
  // Other tests create and remove names in parallel: look for this one's
  // unique label, not at the count.
  auto label = tether_test::unique_name("tt-memfd");
  auto mem = must(tether::Memfd::create(4096, label));
  auto map = must(mem.map());
  for (const auto& entry : must(tether::posix_shared_memory_list()))
    EXPECT_EQ(entry.name.find(label), std::string::npos) << entry.name;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec))
    EXPECT_EQ(entry.path().filename().string().find(label), std::string::npos) << entry.path();
  EXPECT_EQ(run_in_child([&] {
              std::memcpy(map.data(), "child", 6);
              return 0;
            }),
            0);
  EXPECT_STREQ(reinterpret_cast<const char*>(map.data()), "child");
  // Close-on-exec.
  EXPECT_EQ(::fcntl(mem.fd(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
}

TEST_F(Shm, MemfdPassedOverAUnixSocketIsMappedByTheReceiver) {
  auto [parent, child] = must(tether::socket_pair());
  auto receiver = tether::fork([&]() -> int {
    std::vector<tether::Fd> fds;
    std::byte buf[8];
    auto n = child.recv_fds(buf, fds, 4, 30s);
    if (!n || fds.size() != 1) return 1;
    auto mem = tether::Memfd::from_fd(std::move(fds[0]), 4096);
    if (!mem) return 2;
    auto seals = mem->seals();
    if (!seals || (*seals & F_SEAL_SHRINK) == 0) return 3;
    auto m = mem->map();
    if (!m) return 4;
    if (std::strcmp(reinterpret_cast<const char*>(m->data()), "hello") != 0) return 5;
    std::memcpy(m->data() + 100, "seen", 5);
    return 0;
  });
  TT_ASSERT_OK(receiver);
  child.close();  // the child has its copy
  auto mem = must(tether::Memfd::create(4096));
  auto map = must(mem.map());
  std::memcpy(map.data(), "hello", 6);
  TT_ASSERT_OK(mem.add_seals(F_SEAL_SHRINK | F_SEAL_GROW));
  TT_EXPECT_ERROR(mem.resize(8192), std::errc::operation_not_permitted);
  int fds[] = {mem.fd()};
  TT_ASSERT_OK(parent.send_fds(tether_test::bytes("m"), fds));
  auto st = must(receiver->wait(30s));
  EXPECT_EQ(st.code(), 0) << st.describe();
  EXPECT_STREQ(reinterpret_cast<const char*>(map.data() + 100), "seen");
}

TEST_F(Shm, MemfdRefusesADescriptorThatIsNotOne) {
  auto [r, w] = must(tether::make_pipe());
  auto bad = tether::Memfd::from_fd(std::move(r));
  TT_ASSERT_ERROR(bad, std::errc::invalid_argument);
  EXPECT_NE(bad.error().message().find("pipe"), std::string::npos) << bad.error().message();
  TT_EXPECT_ERROR(tether::Memfd::from_fd(tether::Fd()), std::errc::bad_file_descriptor);
  auto small = must(tether::Memfd::create(100));
  tether::Fd dup(::fcntl(small.fd(), F_DUPFD_CLOEXEC, 0));
  auto short_one = tether::Memfd::from_fd(std::move(dup), 4096);
  TT_ASSERT_ERROR(short_one, std::errc::invalid_argument);
  EXPECT_NE(short_one.error().message().find("adopt memfd tether: it holds 100 bytes"),
            std::string::npos)
      << short_one.error().message();
  TT_EXPECT_ERROR(tether::Memfd::create(0), std::errc::invalid_argument);
}

// ---------------------------------------------------------------- file

TEST_F(Shm, MappedFileIsWrittenByOneProcessAndReadByAnother) {
  auto path = temp_path("tt-mapped");
  auto file = must(tether::MappedFile::create(path, 4096));
  EXPECT_EQ(std::filesystem::file_size(path), 4096u);
  EXPECT_EQ(run_in_child([&] {
              auto f = tether::MappedFile::open(path);
              if (!f || f->owns()) return 1;
              auto m = f->map();
              if (!m) return 2;
              std::memcpy(m->data(), "written through a mapping", 26);
              return m->sync() ? 0 : 3;
            }),
            0);
  auto map = must(file.map(Access::read_only));
  EXPECT_STREQ(reinterpret_cast<const char*>(map.data()), "written through a mapping");
  // And it is in the file itself.
  char buf[26] = {};
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::read(fd, buf, sizeof buf), 26);
  ::close(fd);
  EXPECT_STREQ(buf, "written through a mapping");
  // Opening grows a smaller file to the size asked.
  auto grown = must(tether::MappedFile::open(path, Access::read_write, std::size_t{3} * 4096));
  EXPECT_EQ(std::filesystem::file_size(path), 3u * 4096);
  EXPECT_EQ(must(grown.map()).size(), 3u * 4096);
  TT_EXPECT_ERROR(tether::MappedFile::open(path, Access::read_only, std::size_t{8} * 4096),
                  std::errc::invalid_argument);
}

TEST_F(Shm, MappedFileRefusesWhatIsNotARegularFile) {
  auto dir = temp_path("tt-mapped-dir");
  std::filesystem::create_directory(dir);
  auto fifo = dir / "fifo", link = dir / "link", target = dir / "target";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  {
    auto t = must(tether::MappedFile::create(target, 10));
    t.release();
  }
  std::filesystem::create_symlink(target, link);
  auto f = tether::MappedFile::open(fifo);  // must not block: nobody writes it
  TT_ASSERT_ERROR(f, std::errc::invalid_argument);
  EXPECT_NE(f.error().message().find("a FIFO, not a regular file"), std::string::npos);
  auto l = tether::MappedFile::open(link);
  TT_ASSERT_ERROR(l, std::errc::too_many_symbolic_link_levels);
  EXPECT_NE(l.error().message().find("symbolic link"), std::string::npos);
  TT_EXPECT_ERROR(tether::MappedFile::create(link, 10), std::errc::file_exists);
  TT_EXPECT_ERROR(tether::MappedFile::open(dir), std::errc::is_a_directory);
  // Beyond the space of its file system: ENOSPC and no file left.
  auto huge = std::filesystem::path("/dev/shm") / tether_test::unique_name("tt-mapped-huge");
  TT_EXPECT_ERROR(tether::MappedFile::create(huge, fs_total("/dev/shm") + (std::size_t(1) << 30)),
                  std::errc::no_space_on_device);
  EXPECT_FALSE(std::filesystem::exists(huge));
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------- System V

TEST_F(Shm, SysvSegmentIsSharedByKeyAndCountsAttachments) {
  auto key = tether_test::unique_key();
  auto seg = must(tether::SysvSharedMemory::create(key, 10000));
  auto map = must(seg.attach());
  EXPECT_EQ(map.size(), 10000u);
  auto st = must(seg.stats());
  EXPECT_EQ(st.size, 10000u);
  EXPECT_EQ(st.attachments, 1u);
  EXPECT_EQ(st.creator, ::getpid());
  EXPECT_EQ(st.mode, 0600u);
  EXPECT_FALSE(st.removed);
  EXPECT_EQ(run_in_child([&] {
              auto other = tether::SysvSharedMemory::open(key, 10000);
              if (!other || other->owns()) return 1;
              auto m = other->attach();
              if (!m) return 2;
              // The parent's, the one fork gave this child (shmat(2):
              // "the child inherits the attached segments"), and this one.
              auto s = other->stats();
              if (!s || s->attachments != 3) return 3;
              std::memcpy(m->data(), "sysv", 5);
              return 0;
            }),
            0);
  EXPECT_STREQ(reinterpret_cast<const char*>(map.data()), "sysv");
  auto wrong = tether::SysvSharedMemory::open(key, 4096);
  TT_ASSERT_ERROR(wrong, std::errc::invalid_argument);
  EXPECT_NE(wrong.error().message().find("10000 bytes"), std::string::npos);
  TT_EXPECT_ERROR(tether::SysvSharedMemory::create(key, 10000), std::errc::file_exists);
  TT_EXPECT_ERROR(tether::SysvSharedMemory::create(tether_test::unique_key(), 0),
                  std::errc::invalid_argument);
  TT_EXPECT_ERROR(tether::SysvSharedMemory::open(tether_test::unique_key()),
                  std::errc::no_such_file_or_directory);
}

TEST_F(Shm, SysvRemovalIsDeferredUntilTheLastDetach) {
  auto seg = must(tether::SysvSharedMemory::create(tether::SysvSharedMemory::private_key, 4096));
  int id = seg.id();
  auto map = must(seg.attach());
  auto by_id = must(tether::SysvSharedMemory::from_id(id));
  TT_ASSERT_OK(seg.remove());
  EXPECT_FALSE(seg.owns());
  // Still there for whoever has it attached, marked for removal.
  auto st = must(by_id.stats());
  EXPECT_TRUE(st.removed);
  EXPECT_EQ(st.attachments, 1u);
  map.data()[0] = std::byte{1};
  TT_ASSERT_OK(map.unmap());
  shmid_ds ds{};
  EXPECT_NE(::shmctl(id, IPC_STAT, &ds), 0);  // gone with the last detach
}

TEST_F(Shm, SysvSegmentOfAnotherUserIsAccessDenied) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a process as nobody";
  auto key = tether_test::unique_key();
  auto seg = must(tether::SysvSharedMemory::create(key, 4096));
  EXPECT_EQ(run_in_child([&] {
              if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;
              auto other = tether::SysvSharedMemory::open(key);
              if (other) return 1;
              return other.error() == std::errc::permission_denied ? 0 : 2;
            }),
            0);
}

// ---------------------------------------------------------------- Mapping

TEST_F(Shm, MappingMovesAndUnmapsOnce) {
  auto a = must(tether::Mapping::anonymous(4096));
  std::byte* p = a.data();
  tether::Mapping b(std::move(a));
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_EQ(b.data(), p);
  tether::Mapping c;
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  TT_ASSERT_OK(c.unmap());
  EXPECT_FALSE(c.valid());
  TT_ASSERT_OK(c.unmap());  // a second unmap does nothing
  TT_EXPECT_ERROR(tether::Mapping::anonymous(0), std::errc::invalid_argument);
  // keep_mapped: the pages stay after the owner is gone.
  std::byte* kept = nullptr;
  {
    auto k = must(tether::Mapping::anonymous(4096));
    k.keep_mapped();
    kept = k.data();
    kept[0] = std::byte{9};
  }
  EXPECT_EQ(kept[0], std::byte{9});
}
