// Memory with no name anywhere (a memfd: nothing in /dev/shm), handed to
// another program over a Unix socket. Only a process given the descriptor
// can map it, and nothing is left behind when the last one closes it.
//   memfd_pass            makes the memory, starts `memfd_pass receiver`
//                         (a new program, exec'd: it inherits no mapping),
//                         passes it the descriptor, reads its answer
//   memfd_pass receiver   (its socket on descriptor 3) maps what it is given
//                         and answers in it
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include <tether/tether.hpp>

namespace {

using namespace std::chrono_literals;

int failed(const tether::Error& e) {
  std::fprintf(stderr, "%s\n", e.message().c_str());
  return 1;
}

// The memory's layout, the same in both programs.
struct Note {
  char question[128];
  char answer[128];
};

constexpr int kSocketFd = 3;  // where the receiver finds its end of the socket

int receiver() {
  tether::Socket socket(tether::Fd(kSocketFd), false, "socket to the sender");
  std::byte byte[1];
  std::vector<tether::Fd> fds;
  if (auto n = socket.recv_fds(byte, fds, 1, 10s); !n) return failed(n.error());
  if (fds.size() != 1) {
    std::fprintf(stderr, "receiver: %zu descriptors came, not 1\n", fds.size());
    return 1;
  }
  // Anything but a memfd is refused, and one smaller than a Note.
  auto memory = tether::Memfd::from_fd(std::move(fds[0]), sizeof(Note));
  if (!memory) return failed(memory.error());
  // Sealed against shrinking, it cannot be cut short under our mapping by
  // the sender (a touch past the end would be SIGBUS).
  auto seals = memory->seals();
  if (!seals) return failed(seals.error());
  if ((*seals & F_SEAL_SHRINK) == 0) {
    std::fprintf(stderr, "receiver: the memory may shrink under us\n");
    return 1;
  }
  auto map = memory->map();
  if (!map) return failed(map.error());
  auto note = map->view<Note>();
  if (!note) return failed(note.error());
  // At most 64 bytes of the question: memory from another process need not
  // hold a terminating NUL.
  std::snprintf((*note)->answer, sizeof(Note::answer), "receiver pid %d read '%.64s': 42", getpid(),
                (*note)->question);
  // Done: the sender can read the answer now.
  if (auto ok = socket.send_all("k", 10s); !ok) return failed(ok.error());
  return 0;
}

int sender() {
  auto memory = tether::Memfd::create(sizeof(Note), "question");
  if (!memory) return failed(memory.error());
  auto map = memory->map();
  if (!map) return failed(map.error());
  auto note = map->construct<Note>();
  if (!note) return failed(note.error());
  std::snprintf((*note)->question, sizeof(Note::question), "What is 6 x 7?");
  if (auto ok = memory->add_seals(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL); !ok)
    return failed(ok.error());
  // The only name it has is for /proc: "/memfd:question (deleted)".
  char link[128] = {};
  std::string proc = "/proc/self/fd/" + std::to_string(memory->fd());
  if (::readlink(proc.c_str(), link, sizeof link - 1) < 0) {
    std::perror("readlink");
    return 1;
  }
  std::printf("memory: %s, in no directory\n", link);

  auto pair = tether::socket_pair();
  if (!pair) return failed(pair.error());
  auto& [ours, theirs] = *pair;
  // This same program again, as a new process image: /proc/self/exe is the
  // running binary, whatever argv[0] says.
  auto child = tether::Command("/proc/self/exe")
                   .arg0("memfd_pass")
                   .arg("receiver")
                   .pass_fd(theirs.fd(), kSocketFd)
                   .spawn();
  if (!child) return failed(child.error());
  if (auto ok = theirs.close(); !ok) return failed(ok.error());
  const int fds[] = {memory->fd()};
  if (auto ok = ours.send_fds(std::as_bytes(std::span("m", 1)), fds, 10s); !ok)
    return failed(ok.error());
  std::byte done[1];
  auto n = ours.recv(done, 10s);  // 0: it hung up (died) without answering
  if (!n) return failed(n.error());
  if (*n == 1) std::printf("answer in the memory: %s\n", (*note)->answer);
  auto status = child->wait(10s);
  if (!status) return failed(status.error());
  std::printf("receiver %s\n", status->describe().c_str());
  return status->success() && *n == 1 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "receiver") return receiver();
  if (argc != 1) {
    std::fprintf(stderr, "usage: memfd_pass [receiver]\n");
    return 2;
  }
  return sender();
}
