// System V shared memory guarded by a System V semaphore set, between two
// unrelated processes that share nothing but a key:
//   sysv_shm_semaphore writer KEY   creates both, leaves a message, waits for
//                                   the reply, removes both
//   sysv_shm_semaphore reader KEY   opens both (waiting for the writer to
//                                   make them), reads the message, replies
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <span>
#include <string>

#include <tether/tether.hpp>

namespace {

using namespace std::chrono_literals;

int failed(const tether::Error& e) {
  std::fprintf(stderr, "%s\n", e.message().c_str());
  return 1;
}

// The segment's layout, the same in both programs.
struct Mailbox {
  char message[128];
  char reply[128];
};

// The set's semaphores. kLock (1 at first) guards the mailbox; it is taken
// and given back with SEM_UNDO, so that a holder killed inside gives it
// back. kMessage and kReply (0 at first) say "there is something for you":
// posted *without* SEM_UNDO, which would take the post back when the poster
// exits, maybe before the other side has taken it.
enum : unsigned short { kLock, kMessage, kReply };

tether::Result<void> signal(const tether::SysvSemaphores& set, unsigned short which) {
  tether::SysvSemaphores::Op op{.index = which, .delta = 1, .undo = false};
  return set.apply(std::span(&op, 1));
}
tether::Result<void> await(const tether::SysvSemaphores& set, unsigned short which) {
  tether::SysvSemaphores::Op op{.index = which, .delta = -1, .undo = false};
  return set.apply(std::span(&op, 1), 10s);
}

int writer(tether::SysvKey key) {
  // The segment first, the semaphores last: once the reader can open the
  // set (it waits until the set is initialised), the segment is there.
  auto shm = tether::SysvSharedMemory::create(key, sizeof(Mailbox));  // owned: removed when it goes
  if (!shm) return failed(shm.error());
  auto map = shm->attach();
  if (!map) return failed(map.error());
  auto box = map->construct<Mailbox>();
  if (!box) return failed(box.error());
  const unsigned short initial[] = {1, 0, 0};
  auto set = tether::SysvSemaphores::create(key, initial);  // owned too
  if (!set) return failed(set.error());

  if (auto ok = set->wait(kLock, 1, 10s); !ok) return failed(ok.error());
  std::snprintf((*box)->message, sizeof(Mailbox::message), "hello from writer pid %d", getpid());
  if (auto ok = set->post(kLock); !ok) return failed(ok.error());
  if (auto ok = signal(*set, kMessage); !ok) return failed(ok.error());

  if (auto ok = await(*set, kReply); !ok) return failed(ok.error());
  if (auto ok = set->wait(kLock, 1, 10s); !ok) return failed(ok.error());
  std::printf("writer got reply: %s\n", (*box)->reply);
  if (auto ok = set->post(kLock); !ok) return failed(ok.error());

  // The creator removes both. Detach first: the kernel keeps a removed
  // segment until its last process detaches.
  if (auto ok = map->unmap(); !ok) return failed(ok.error());
  if (auto ok = shm->remove(); !ok) return failed(ok.error());
  if (auto ok = set->remove(); !ok) return failed(ok.error());
  bool shm_gone = !tether::SysvSharedMemory::open(key);
  bool set_gone = !tether::SysvSemaphores::open(key, tether::Deadline::immediate());
  std::printf("writer removed both: %s\n", shm_gone && set_gone ? "yes" : "no");
  return shm_gone && set_gone ? 0 : 1;
}

// The writer may not have made the set yet: try again until it has.
tether::Result<tether::SysvSemaphores> open_when_made(tether::SysvKey key) {
  tether::Backoff backoff{1ms, 50ms};
  tether::Deadline deadline = 10s;
  for (;;) {
    auto set = tether::SysvSemaphores::open(key);
    if (set || !(set.error() == std::errc::no_such_file_or_directory)) return set;
    if (!backoff.wait(deadline)) return set;
  }
}

int reader(tether::SysvKey key) {
  auto set = open_when_made(key);
  if (!set) return failed(set.error());
  auto shm = tether::SysvSharedMemory::open(key, sizeof(Mailbox));  // not ours: never removed here
  if (!shm) return failed(shm.error());
  auto map = shm->attach();
  if (!map) return failed(map.error());
  auto box = map->view<Mailbox>();
  if (!box) return failed(box.error());

  if (auto ok = await(*set, kMessage); !ok) return failed(ok.error());
  if (auto ok = set->wait(kLock, 1, 10s); !ok) return failed(ok.error());
  std::printf("reader pid %d got: %s\n", getpid(), (*box)->message);
  std::fflush(stdout);  // before the writer, which prints once we reply
  std::snprintf((*box)->reply, sizeof(Mailbox::reply), "thanks from reader pid %d", getpid());
  if (auto ok = set->post(kLock); !ok) return failed(ok.error());
  if (auto ok = signal(*set, kReply); !ok) return failed(ok.error());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string role = argc == 3 ? argv[1] : "";
  if (role != "writer" && role != "reader") {
    std::fprintf(stderr, "usage: sysv_shm_semaphore writer|reader KEY\n");
    return 2;
  }
  auto key = tether::SysvKey::parse(argv[2]);
  if (!key) return failed(key.error());
  return role == "writer" ? writer(*key) : reader(*key);
}
