#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <map>

#include "support.hpp"

using namespace std::chrono_literals;
using tether::Pipe;
using tether_test::bytes;
using tether_test::Clean;
using tether_test::helper;
using tether_test::must;

namespace {

std::string read_string(const tether::PipeReader& r, std::size_t max = 256) {
  std::string s(max, '\0');
  auto n = r.read(std::as_writable_bytes(std::span(s)));
  s.resize(n ? *n : 0);
  return s;
}

// Whether SIGPIPE is pending for this thread or process.
bool sigpipe_pending() {
  sigset_t pending;
  sigpending(&pending);
  return sigismember(&pending, SIGPIPE) == 1;
}

}  // namespace

using PipeTest = Clean;

TEST_F(PipeTest, WriteReadAndEndOfStream) {
  auto p = must(Pipe::create());
  EXPECT_FALSE(p.reader.nonblocking());
  TT_ASSERT_OK(p.writer.write_all("hello"));
  EXPECT_EQ(read_string(p.reader), "hello");
  TT_ASSERT_OK(p.writer.close());
  EXPECT_EQ(read_string(p.reader), "");  // 0 bytes: end of stream
  std::array<std::byte, 4> buf;
  auto exact = p.reader.read_exact(buf);
  ASSERT_FALSE(exact);
  TT_EXPECT_ERROR(exact, tether::errc::end_of_stream);
}

TEST_F(PipeTest, BothEndsAreCloseOnExec) {
  auto p = must(Pipe::create());
  EXPECT_EQ(fcntl(p.reader.fd(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  EXPECT_EQ(fcntl(p.writer.fd(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
}

TEST_F(PipeTest, ReadExactReportsTruncation) {
  auto p = must(Pipe::create());
  TT_ASSERT_OK(p.writer.write_all("abc"));
  TT_ASSERT_OK(p.writer.close());
  std::array<std::byte, 8> buf;
  auto r = p.reader.read_exact(buf);
  ASSERT_FALSE(r);
  TT_EXPECT_ERROR(r, tether::errc::truncated);
  EXPECT_EQ(r.error().message(),
            "read pipe: got 3 of 8 bytes: stream ended in the middle of a record");
}

TEST_F(PipeTest, NonBlockingReadAndWriteWouldBlock) {
  auto p = must(Pipe::create(true));
  EXPECT_TRUE(p.reader.nonblocking());
  std::array<std::byte, 16> buf;
  auto r = p.reader.try_read(buf);
  ASSERT_FALSE(r);
  TT_EXPECT_ERROR(r, std::errc::resource_unavailable_try_again);
  // Fill it up: a non-blocking write then fails with would-block too.
  std::string chunk(65536, 'z');
  std::size_t total = 0;
  for (;;) {
    auto w = p.writer.try_write(bytes(chunk));
    if (!w) {
      TT_ASSERT_ERROR(w, std::errc::resource_unavailable_try_again);
      break;
    }
    total += *w;
  }
  EXPECT_EQ(total, must(p.writer.capacity()));
  EXPECT_EQ(must(p.reader.pending()), total);
}

TEST_F(PipeTest, TryFormsNeverBlockOnABlockingPipe) {
  auto p = must(Pipe::create(false));
  std::array<std::byte, 16> buf;
  auto r = p.reader.try_read(buf);
  ASSERT_FALSE(r);
  TT_EXPECT_ERROR(r, std::errc::resource_unavailable_try_again);
  TT_ASSERT_OK(p.reader.handle().duplicate());  // still usable afterwards
  std::string big(1 << 20, 'q');
  std::size_t total = 0;
  for (int i = 0; i < 1000; ++i) {
    auto w = p.writer.try_write(bytes(big));
    if (!w) break;
    total += *w;
  }
  EXPECT_EQ(total, must(p.writer.capacity()));
}

TEST_F(PipeTest, DeadlineReadTimesOut) {
  for (bool nonblocking : {false, true}) {
    auto p = must(Pipe::create(nonblocking));
    std::array<std::byte, 16> buf;
    auto r = p.reader.read(buf, 30ms);
    ASSERT_FALSE(r);
    TT_EXPECT_ERROR(r, std::errc::timed_out);
    auto e = p.reader.read_exact(buf, 30ms);
    ASSERT_FALSE(e);
    TT_EXPECT_ERROR(e, std::errc::timed_out);
  }
}

TEST_F(PipeTest, DeadlineWriteTimesOutWhenFull) {
  for (bool nonblocking : {false, true}) {
    auto p = must(Pipe::create(nonblocking));
    std::string big(4 << 20, 'w');
    auto w = p.writer.write_all(bytes(big), 50ms);
    ASSERT_FALSE(w);
    TT_EXPECT_ERROR(w, std::errc::timed_out);
    EXPECT_EQ(must(p.reader.pending()), must(p.writer.capacity()));
  }
}

TEST_F(PipeTest, CapacityCanBeResized) {
  auto p = must(Pipe::create());
  EXPECT_EQ(must(p.writer.capacity()), 65536u);
  EXPECT_EQ(must(p.writer.set_capacity(1 << 20)), 1u << 20);
  EXPECT_EQ(must(p.reader.capacity()), 1u << 20);
  // The kernel rounds up to a power-of-two number of pages.
  EXPECT_EQ(must(p.writer.set_capacity(100000)), 131072u);
  auto bad = p.writer.set_capacity(std::size_t(1) << 40);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("set capacity of pipe"), std::string::npos);
}

TEST_F(PipeTest, WriteWithoutReaderIsBrokenPipeNotDeath) {
  for (bool fallback : {false, true}) {
    tether::detail::force_sigpipe_fallback = fallback;
    ASSERT_EQ(::signal(SIGPIPE, SIG_DFL), SIG_DFL);  // the default would kill us
    auto p = must(Pipe::create());
    TT_ASSERT_OK(p.reader.close());
    auto w = p.writer.write_all("nobody listens");
    ASSERT_FALSE(w);
    TT_EXPECT_ERROR(w, std::errc::broken_pipe);
    EXPECT_EQ(w.error().message(), "write pipe: Broken pipe (EPIPE)");
    EXPECT_FALSE(sigpipe_pending());
    // The signal mask is as it was.
    sigset_t mask;
    pthread_sigmask(SIG_SETMASK, nullptr, &mask);
    EXPECT_FALSE(sigismember(&mask, SIGPIPE));
  }
  tether::detail::force_sigpipe_fallback = false;
}

TEST_F(PipeTest, IgnoreSigpipeOptInUsesPlainWrites) {
  TT_ASSERT_OK(tether::ignore_sigpipe());
  EXPECT_EQ(::signal(SIGPIPE, SIG_IGN), SIG_IGN);
  auto p = must(Pipe::create());
  TT_ASSERT_OK(p.reader.close());
  auto w = p.writer.write_all("nobody");
  ASSERT_FALSE(w);
  TT_EXPECT_ERROR(w, std::errc::broken_pipe);
  // Children still start with SIGPIPE at its default.
  auto out = must(helper("status-lines").output());
  EXPECT_NE(out.out.find("SigIgn:\t0000000000000000"), std::string::npos) << out.out;
}

TEST_F(PipeTest, KernelNoSignalProbeIsConsistent) {
  // Whatever the kernel, the probe answers the same twice and writes work.
  bool first = tether::kernel_has_write_nosignal();
  EXPECT_EQ(tether::kernel_has_write_nosignal(), first);
}

TEST_F(PipeTest, InjectedEintrOnReadAndWriteIsRetried) {
  auto p = must(Pipe::create());
  tether::detail::injected_eintr = 2;
  TT_ASSERT_OK(p.writer.write_all("x"));
  tether::detail::injected_eintr = 2;
  EXPECT_EQ(read_string(p.reader), "x");
  EXPECT_EQ(tether::detail::injected_eintr, 0);
}

TEST_F(PipeTest, WritesUpToPipeBufAreAtomicAcrossWriters) {
  // Four children each write 200 records of PIPE_BUF bytes of their own
  // letter into one pipe; every record read must be whole.
  auto p = must(Pipe::create());
  std::vector<tether::Process> writers;
  for (char letter : std::string("ABCD")) {
    writers.push_back(must(helper("records", {std::string(1, letter), "200"})
                               .stdout_to(tether::Stdio::fd(p.writer.fd()))
                               .spawn()));
  }
  TT_ASSERT_OK(p.writer.close());
  std::string all = must(p.reader.read_all(60s));
  ASSERT_EQ(all.size(), 4u * 200 * PIPE_BUF);
  std::map<char, int> records;
  for (std::size_t off = 0; off < all.size(); off += PIPE_BUF) {
    std::string_view rec(all.data() + off, PIPE_BUF);
    ASSERT_EQ(rec.find_first_not_of(rec[0]), std::string_view::npos) << "interleaved at " << off;
    ++records[rec[0]];
  }
  EXPECT_EQ(records, (std::map<char, int>{{'A', 200}, {'B', 200}, {'C', 200}, {'D', 200}}));
  for (auto& w : writers) EXPECT_TRUE(must(w.wait()).success());
}

TEST_F(PipeTest, DuplexConversationWithAChild) {
  auto duplex = must(tether::DuplexPipe::create());
  // The child's stdin is our `first.out`'s pipe, its stdout our `first.in`'s.
  auto child = must(helper("echo")
                        .stdin_from(tether::Stdio::fd(duplex.second.in.fd()))
                        .stdout_to(tether::Stdio::fd(duplex.second.out.fd()))
                        .spawn());
  TT_ASSERT_OK(duplex.second.in.close());
  TT_ASSERT_OK(duplex.second.out.close());
  for (std::string msg : {"ping", "pong", "over"}) {
    TT_ASSERT_OK(duplex.first.out.write_all(msg));
    std::string back(msg.size(), '\0');
    TT_ASSERT_OK(duplex.first.in.read_exact(std::as_writable_bytes(std::span(back)), 10s));
    EXPECT_EQ(back, msg);
  }
  TT_ASSERT_OK(duplex.first.out.close());  // end of input: the child exits
  EXPECT_EQ(read_string(duplex.first.in), "");
  EXPECT_TRUE(must(child.wait()).success());
}

TEST_F(PipeTest, AdoptedDescriptorKnowsItsMode) {
  auto child = must(helper("stderr").stdout_to(tether::Stdio::pipe()).spawn());
  tether::PipeReader out(std::move(child.stdout_fd()));
  EXPECT_FALSE(out.nonblocking());
  EXPECT_EQ(must(out.read_all(10s)), "to stdout\n");
  EXPECT_TRUE(must(child.wait()).success());
}
