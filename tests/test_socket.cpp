#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <thread>

#include "support.hpp"

using namespace std::chrono_literals;
using tether::Command;
using tether::Socket;
using tether::SocketType;
using tether::UnixAddress;
using tether::UnixListener;
using tether_test::bytes;
using tether_test::Clean;
using tether_test::must;

namespace {

std::filesystem::path socket_path() {
  return std::filesystem::temp_directory_path() / tether_test::unique_name("tether-sock");
}

std::string recv_string(const Socket& s, std::size_t max = 256, tether::Deadline d = 10s) {
  std::string out(max, '\0');
  auto n = s.recv(std::as_writable_bytes(std::span(out)), d);
  out.resize(n ? *n : 0);
  return out;
}

}  // namespace

class SocketTest : public Clean {
 protected:
  void TearDown() override {
    EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(path)))
        << path << " left behind";
    std::filesystem::remove(path);
    Clean::TearDown();
  }
  std::filesystem::path path = socket_path();
};

TEST_F(SocketTest, UnixStreamBothWaysAndFileIsPrivate) {
  auto address = must(UnixAddress::path(path));
  {
    mode_t old = ::umask(0);
    auto listener = must(UnixListener::listen(address));
    ::umask(old);
    struct stat st {};
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    auto client = must(tether::unix_connect(address));
    auto server = must(listener.accept(10s));
    TT_ASSERT_OK(client.send_all("ping"));
    EXPECT_EQ(recv_string(server), "ping");
    TT_ASSERT_OK(server.send_all("pong"));
    EXPECT_EQ(recv_string(client), "pong");
    EXPECT_EQ(must(server.peer_credentials()).pid, ::getpid());
    EXPECT_EQ(must(server.peer_credentials()).uid, ::geteuid());
  }
  EXPECT_FALSE(std::filesystem::exists(path));  // the listener removed its file
}

TEST_F(SocketTest, StaleSocketFileIsReplacedLiveOneIsNot) {
  auto address = must(UnixAddress::path(path));
  {
    auto first = must(UnixListener::listen(address));
    auto second = UnixListener::listen(address);
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error(), std::errc::address_in_use);
    EXPECT_NE(second.error().message().find("another process is listening"), std::string::npos);
    // Leave a stale file behind, as a crashed server would.
    first = UnixListener();
  }
  {
    auto fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    auto [addr, len] = address.to_sockaddr();
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len), 0);
    ::close(fd);  // the file stays, nobody listens
  }
  auto replaced = must(UnixListener::listen(address));
  auto client = must(tether::unix_connect(address, SocketType::stream, 5s));
  EXPECT_TRUE(must(replaced.accept(5s)).valid());
}

TEST_F(SocketTest, NonSocketAtThePathIsRefused) {
  std::ofstream(path) << "a file";
  auto l = UnixListener::listen(must(UnixAddress::path(path)));
  ASSERT_FALSE(l);
  EXPECT_NE(l.error().message().find("not a socket"), std::string::npos) << l.error().message();
  EXPECT_TRUE(std::filesystem::is_regular_file(path));
  std::filesystem::remove(path);
}

TEST_F(SocketTest, AbstractNamespaceHasNoFile) {
  auto address = must(UnixAddress::abstract(tether_test::unique_name("tether-abstract")));
  EXPECT_EQ(address.describe().rfind("unix-abstract:", 0), 0u);
  auto listener = must(UnixListener::listen(address));
  auto client = must(tether::unix_connect(address));
  auto server = must(listener.accept(10s));
  TT_ASSERT_OK(client.send_all("abstract"));
  EXPECT_EQ(recv_string(server), "abstract");
}

TEST_F(SocketTest, PolicyRefusesAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as nobody";
  auto name = tether_test::unique_name("tether-policy");
  auto listener = must(UnixListener::listen(must(UnixAddress::abstract(name))));
  // A client running as nobody (uid 65534). The script is one argument of
  // python3 -c, written in pieces: parenthesised, it reads as one literal.
  auto client =
      must(Command("setpriv")
               .args({"--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
                      ("import socket, sys\n"
                       "s = socket.socket(socket.AF_UNIX)\n"
                       "s.connect('\\0' + sys.argv[1])\n"
                       "print(len(s.recv(16)))\n"),
                      name})
               .stdout_to(tether::Stdio::pipe())
               .die_with_parent()
               .spawn());
  auto refused = listener.accept(20s);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error(), std::errc::permission_denied);
  EXPECT_NE(refused.error().message().find("from uid 65534"), std::string::npos)
      << refused.error().message();
  // The refused client saw the connection closed: it read 0 bytes.
  auto out = must(client.communicate({}, 20s));
  EXPECT_EQ(out.out, "0\n");
  EXPECT_TRUE(out.status.success());
}

TEST_F(SocketTest, SeqpacketKeepsBoundariesAndRefusesTruncation) {
  auto [a, b] = must(tether::socket_pair(SocketType::seqpacket));
  TT_ASSERT_OK(a.send(bytes("one")));
  TT_ASSERT_OK(a.send(bytes("two!")));
  TT_ASSERT_OK(a.send(bytes(std::string(100, 'x'))));
  EXPECT_EQ(recv_string(b), "one");
  EXPECT_EQ(recv_string(b), "two!");
  std::array<std::byte, 10> small;
  auto big = b.recv(small);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error(), std::errc::message_size);
  EXPECT_NE(big.error().message().find("100-byte message does not fit a 10-byte buffer"),
            std::string::npos);
}

TEST_F(SocketTest, DatagramToABoundAddress) {
  auto address = must(UnixAddress::path(path));
  auto receiver = must(tether::unix_bind_datagram(address));
  auto sender = must(tether::unix_connect(address, SocketType::datagram));
  TT_ASSERT_OK(sender.send(bytes("dgram 1")));
  TT_ASSERT_OK(sender.send(bytes("dgram 2")));
  EXPECT_EQ(recv_string(receiver), "dgram 1");
  EXPECT_EQ(recv_string(receiver), "dgram 2");
  TT_ASSERT_OK(receiver.close());
  std::filesystem::remove(path);  // a datagram socket's file is the caller's to remove
}

TEST_F(SocketTest, PassingDescriptors) {
  auto [a, b] = must(tether::socket_pair());
  auto pipe = must(tether::make_pipe());
  int to_send[] = {pipe.second.get()};
  TT_ASSERT_OK(a.send_fds(bytes("fd"), to_send));
  pipe.second.reset();  // only the received copy remains
  std::vector<tether::Fd> got;
  std::array<std::byte, 8> buf;
  EXPECT_EQ(must(b.recv_fds(buf, got, 4, 10s)), 2u);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(::fcntl(got[0].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  ASSERT_EQ(::write(got[0].get(), "via SCM_RIGHTS", 14), 14);
  got.clear();
  char text[32] = {};
  EXPECT_EQ(::read(pipe.first.get(), text, sizeof text), 14);
  EXPECT_STREQ(text, "via SCM_RIGHTS");
}

TEST_F(SocketTest, ClosedPeerIsBrokenPipeNotSigpipe) {
  ASSERT_EQ(::signal(SIGPIPE, SIG_DFL), SIG_DFL);
  auto [a, b] = must(tether::socket_pair());
  TT_ASSERT_OK(b.close());
  auto r = a.send_all("into the void");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), std::errc::broken_pipe);
}

TEST_F(SocketTest, EndOfStreamAfterShutdown) {
  auto [a, b] = must(tether::socket_pair());
  TT_ASSERT_OK(a.send_all("last"));
  TT_ASSERT_OK(a.shutdown_write());
  EXPECT_EQ(recv_string(b), "last");
  EXPECT_EQ(recv_string(b), "");
  std::array<std::byte, 4> buf;
  TT_EXPECT_ERROR(b.recv_exact(buf), tether::errc::end_of_stream);
}

TEST_F(SocketTest, DeadlineAndTryForms) {
  auto [a, b] = must(tether::socket_pair());
  std::array<std::byte, 4> buf;
  TT_EXPECT_ERROR(b.recv(buf, 20ms), std::errc::timed_out);
  TT_EXPECT_ERROR(b.try_recv(buf), std::errc::resource_unavailable_try_again);
  auto listener = must(UnixListener::listen(must(UnixAddress::path(path))));
  TT_EXPECT_ERROR(listener.accept(20ms), std::errc::timed_out);
  // Fill the send side: try_send then says would-block.
  std::string chunk(65536, 'f');
  for (;;) {
    auto n = a.try_send(bytes(chunk));
    if (!n) {
      EXPECT_EQ(n.error(), std::errc::resource_unavailable_try_again);
      break;
    }
  }
  TT_EXPECT_ERROR(a.send_all(bytes(chunk), 20ms), std::errc::timed_out);
}

TEST_F(SocketTest, BufferSizes) {
  auto [a, b] = must(tether::socket_pair());
  TT_ASSERT_OK(a.set_send_buffer(65536));
  TT_ASSERT_OK(b.set_recv_buffer(65536));
  EXPECT_EQ(must(a.send_buffer()), 131072u);  // the kernel doubles it (socket(7))
  EXPECT_EQ(must(b.recv_buffer()), 131072u);
}

TEST_F(SocketTest, ConnectErrorsNameTheAddress) {
  auto missing = tether::unix_connect(must(UnixAddress::path(path)));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error(), std::errc::no_such_file_or_directory);
  EXPECT_EQ(missing.error().message(),
            "connect to unix:" + path.string() + ": No such file or directory (ENOENT)");
  auto too_long = UnixAddress::path(std::string(200, 'p'));
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error(), std::errc::filename_too_long);
}

// connect(2) to a Unix listener whose backlog is full fails with EAGAIN on
// a non-blocking socket and leaves it unconnected; that used to be taken
// for "in progress", so connect "succeeded" and the first send failed with
// ENOTCONN. Now it is retried until the deadline, then timed_out.
TEST_F(SocketTest, ConnectToAFullBacklogWaitsForRoomUntilTheDeadline) {
  auto address = must(UnixAddress::path(path));
  auto listener = must(UnixListener::listen(address, {.backlog = 1}));
  // Fill the backlog with connections nobody accepts (the kernel queues
  // backlog + 1 of them: net/unix/af_unix.c, unix_recvq_full).
  std::vector<tether::Fd> queued;
  auto [addr, len] = address.to_sockaddr();
  for (int i = 0; i < 16; ++i) {
    tether::Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
      ASSERT_EQ(errno, EAGAIN) << "connect " << i;
      break;
    }
    queued.push_back(std::move(fd));
  }
  ASSERT_FALSE(queued.empty());
  ASSERT_LT(queued.size(), 16u) << "the backlog never filled";

  auto full = tether::unix_connect(address, SocketType::stream, 50ms);
  ASSERT_FALSE(full) << "connected to a full backlog";
  EXPECT_EQ(full.error(), std::errc::timed_out);
  EXPECT_NE(full.error().message().find("backlog stayed full"), std::string::npos)
      << full.error().message();
  auto channel = tether::Channel::connect("unix:" + path.string(), 50ms);
  ASSERT_FALSE(channel);
  EXPECT_EQ(channel.error(), std::errc::timed_out);

  // Once the server accepts one, a connect that is retrying gets in.
  tether::Result<Socket> late = tether::fail(EINVAL, "not connected");
  std::thread connector([&] { late = tether::unix_connect(address, SocketType::stream, 20s); });
  auto first = must(listener.accept(10s));
  connector.join();
  ASSERT_TRUE(late) << late.error().message();
  TT_ASSERT_OK(late->send_all("in", 10s));  // really connected: no ENOTCONN
}

// A receive that times out says so (it read "wait for connection on ...").
// The listener's socket file is a NamedObject: removed only if the path
// still holds that socket (a FIFO, or another socket file, put in its place
// stays); release() keeps it; a move hands the ownership over.
TEST_F(SocketTest, ListenerLeavesAReplacedFileAlone) {
  auto address = must(UnixAddress::path(path));
  {
    auto listener = must(UnixListener::listen(address));
    ASSERT_TRUE(listener.owns());
    std::filesystem::remove(path);
    ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
    TT_EXPECT_ERROR(listener.remove(), std::errc::file_exists);
  }
  EXPECT_TRUE(std::filesystem::is_fifo(path));
  std::filesystem::remove(path);
  {
    auto listener = must(UnixListener::listen(address));
    // Another socket file, bound elsewhere and renamed over ours.
    auto elsewhere = socket_path();
    auto other = must(tether::unix_bind_datagram(must(UnixAddress::path(elsewhere))));
    std::filesystem::rename(elsewhere, path);
  }  // the destructor: same rule
  EXPECT_TRUE(std::filesystem::is_socket(path));
  std::filesystem::remove(path);
}

TEST_F(SocketTest, ListenerReleaseKeepsTheFileAndMovesTransferIt) {
  auto address = must(UnixAddress::path(path));
  {
    auto listener = must(UnixListener::listen(address));
    listener.release();
    EXPECT_FALSE(listener.owns());
  }
  EXPECT_TRUE(std::filesystem::is_socket(path));
  {
    auto first = must(UnixListener::listen(address));  // the stale file is replaced
    UnixListener second = std::move(first);
    EXPECT_FALSE(first.owns());  // NOLINT(bugprone-use-after-move): the point of the test
    EXPECT_TRUE(second.owns());
    { UnixListener gone = std::move(first); }  // a moved-from listener removes nothing
    EXPECT_TRUE(std::filesystem::is_socket(path));
    UnixListener third;
    third = std::move(second);
    EXPECT_TRUE(third.owns());
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  auto abstract =
      must(UnixListener::listen(must(UnixAddress::abstract(tether_test::unique_name("ab")))));
  EXPECT_FALSE(abstract.owns());  // no file
}

TEST_F(SocketTest, ReceiveTimeoutIsWordedAsAReceive) {
  auto address = must(UnixAddress::path(path));
  auto listener = must(UnixListener::listen(address));
  auto client = must(tether::unix_connect(address, SocketType::stream, 10s));
  auto server = must(listener.accept(10s));
  std::array<std::byte, 4> buf;
  auto r = server.recv(buf, 20ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), std::errc::timed_out);
  EXPECT_EQ(r.error().message(), "wait for data to receive on connection accepted on unix:" +
                                     path.string() + ": Connection timed out (ETIMEDOUT)");
}

using Tcp = Clean;

TEST_F(Tcp, LoopbackIpv4EchoWithNodelay) {
  auto listener = must(tether::TcpListener::listen("127.0.0.1", 0));
  ASSERT_NE(listener.port(), 0);
  auto client = must(tether::tcp_connect("127.0.0.1", listener.port(), 10s));
  auto server = must(listener.accept(10s));
  int nodelay = 0;
  socklen_t len = sizeof nodelay;
  ::getsockopt(client.fd(), IPPROTO_TCP, TCP_NODELAY, &nodelay, &len);
  EXPECT_EQ(nodelay, 1);
  std::string big(1 << 20, 'b');
  TT_ASSERT_OK(client.send_all(big, 20s));
  std::string got(big.size(), '\0');
  TT_ASSERT_OK(server.recv_exact(std::as_writable_bytes(std::span(got)), 20s));
  EXPECT_TRUE(got == big);
}

TEST_F(Tcp, LoopbackIpv6) {
  auto listener = tether::TcpListener::listen("::1", 0);
  if (!listener) GTEST_SKIP() << "no IPv6 loopback here: " << listener.error().message();
  auto client = must(tether::tcp_connect("::1", listener->port(), 10s));
  auto server = must(listener->accept(10s));
  TT_ASSERT_OK(client.send_all("v6"));
  EXPECT_EQ(recv_string(server), "v6");
}

TEST_F(Tcp, ConnectionRefused) {
  auto listener = must(tether::TcpListener::listen("127.0.0.1", 0));
  std::uint16_t port = listener.port();
  listener = tether::TcpListener();  // closed: nobody listens there now
  auto r = tether::tcp_connect("127.0.0.1", port, 10s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), std::errc::connection_refused);
  EXPECT_NE(r.error().message().find("tcp://127.0.0.1:"), std::string::npos);
}
