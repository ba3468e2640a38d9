// UDP sockets and udp:// channels, on loopback only.
#include <netdb.h>
#include <netinet/in.h>

#include <array>
#include <string>

#include "support.hpp"

using namespace std::chrono_literals;
using tether::Channel;
using tether::ChannelListener;
using tether::InetAddress;
using tether::UdpSocket;
using tether_test::bytes;
using tether_test::Clean;
using tether_test::must;

namespace {

std::string text_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A bound socket on `host` and a socket connected to it.
struct Pair {
  UdpSocket server, client;
};

Pair loopback_pair(const char* host) {
  auto server = must(UdpSocket::bind(host, 0));
  auto client = must(tether::udp_connect(host, server.local_address().port()));
  return {std::move(server), std::move(client)};
}

}  // namespace

using Udp = Clean;

TEST_F(Udp, RoundTripIpv4WithThePeerAddress) {
  auto [server, client] = loopback_pair("127.0.0.1");
  EXPECT_NE(server.local_address().port(), 0);  // port 0 gave an ephemeral one
  EXPECT_EQ(server.description(),
            "udp://127.0.0.1:" + std::to_string(server.local_address().port()));
  ASSERT_TRUE(client.peer());
  EXPECT_EQ(*client.peer(), server.local_address());
  TT_ASSERT_OK(client.send("ping", 10s));
  std::array<std::byte, 64> buf;
  auto got = must(server.recv_from(buf, 10s));
  EXPECT_EQ(text_of(std::span(buf).first(got.size)), "ping");
  EXPECT_EQ(got.from, client.local_address());
  EXPECT_EQ(got.from.host(), "127.0.0.1");
  TT_ASSERT_OK(server.send_to(bytes("pong"), got.from, 10s));
  EXPECT_EQ(text_of(std::span(buf).first(must(client.recv(buf, 10s)))), "pong");
}

TEST_F(Udp, RoundTripIpv6) {
  auto server = UdpSocket::bind("::1", 0);
  if (!server) GTEST_SKIP() << "no IPv6 loopback here: " << server.error().message();
  auto client = must(tether::udp_connect("::1", server->local_address().port()));
  EXPECT_TRUE(client.local_address().is_v6());
  TT_ASSERT_OK(client.send("v6", 10s));
  std::array<std::byte, 64> buf;
  auto got = must(server->recv_from(buf, 10s));
  EXPECT_EQ(text_of(std::span(buf).first(got.size)), "v6");
  EXPECT_EQ(got.from, client.local_address());
  EXPECT_EQ(got.from.describe(), "[::1]:" + std::to_string(client.local_address().port()));
  TT_ASSERT_OK(server->send_to(bytes("back"), got.from, 10s));
  EXPECT_EQ(must(client.recv(buf, 10s)), 4u);
}

TEST_F(Udp, PeerAddressOfEachSender) {
  auto server = must(UdpSocket::bind("127.0.0.1", 0));
  auto to = server.local_address();
  auto first = must(UdpSocket::bind("127.0.0.1", 0));
  auto second = must(UdpSocket::bind("127.0.0.1", 0));
  TT_ASSERT_OK(first.send_to(bytes("one"), to, 10s));
  TT_ASSERT_OK(second.try_send_to(bytes("two"), to));
  std::array<std::byte, 16> buf;
  auto a = must(server.recv_from(buf, 10s));
  EXPECT_EQ(text_of(std::span(buf).first(a.size)), "one");
  EXPECT_EQ(a.from, first.local_address());
  auto b = must(server.recv_from(buf, 10s));
  EXPECT_EQ(text_of(std::span(buf).first(b.size)), "two");
  EXPECT_EQ(b.from, second.local_address());
  EXPECT_FALSE(a.from == b.from);
}

TEST_F(Udp, OversizedDatagramIsRefusedOnSend) {
  auto [server, client] = loopback_pair("127.0.0.1");
  std::string too_big(tether::udp_max_payload_v4 + 1, 'o');
  auto r = client.send(too_big, 10s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), std::errc::message_size);
  EXPECT_NE(r.error().message().find("a 65508-byte datagram is larger than UDP carries"),
            std::string::npos)
      << r.error().message();
  // The largest one goes, and arrives whole.
  std::string largest(tether::udp_max_payload_v4, 'L');
  largest[1234] = 'x';
  TT_ASSERT_OK(client.send(largest, 10s));
  std::string got(largest.size() + 1, '\0');
  auto n = must(server.recv(std::as_writable_bytes(std::span(got)), 10s));
  got.resize(n);
  EXPECT_TRUE(got == largest);
}

TEST_F(Udp, TruncationIsReportedNeverDelivered) {
  auto [server, client] = loopback_pair("127.0.0.1");
  TT_ASSERT_OK(client.send(std::string(100, 't'), 10s));
  TT_ASSERT_OK(client.send("next", 10s));
  std::array<std::byte, 10> small;
  auto r = server.recv_from(small, 10s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), std::errc::message_size);
  EXPECT_NE(
      r.error().message().find("a 100-byte datagram from " + client.local_address().describe() +
                               " does not fit a 10-byte buffer (it was consumed"),
      std::string::npos)
      << r.error().message();
  // That datagram is gone; the next one is whole.
  auto n = must(server.recv(small, 10s));
  EXPECT_EQ(text_of(std::span(small).first(n)), "next");
}

TEST_F(Udp, EmptyDatagramIsADatagram) {
  auto [server, client] = loopback_pair("127.0.0.1");
  TT_ASSERT_OK(client.send(std::span<const std::byte>(), 10s));
  std::array<std::byte, 4> buf;
  EXPECT_EQ(must(server.recv(buf, 10s)), 0u);
}

TEST_F(Udp, DeadlineAndTryForms) {
  auto [server, client] = loopback_pair("127.0.0.1");
  std::array<std::byte, 16> buf;
  auto late = server.recv(buf, 20ms);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error(), std::errc::timed_out);
  EXPECT_NE(late.error().message().find("a datagram on udp://127.0.0.1:"), std::string::npos)
      << late.error().message();
  TT_EXPECT_ERROR(server.recv_from(buf, 20ms), std::errc::timed_out);
  TT_EXPECT_ERROR(server.try_recv(buf), std::errc::resource_unavailable_try_again);
  TT_EXPECT_ERROR(server.try_recv_from(buf), std::errc::resource_unavailable_try_again);
  // The descriptor polls readable once a datagram waits.
  pollfd p{server.fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);
  TT_ASSERT_OK(client.try_send(bytes("now")));
  EXPECT_EQ(::poll(&p, 1, 10000), 1);
  EXPECT_EQ(must(server.try_recv(buf)), 3u);
}

// Loopback answers a datagram to a closed port with ICMP port unreachable;
// a connected socket hears of it on its next call.
TEST_F(Udp, ClosedPortShowsAsConnectionRefused) {
  std::uint16_t port;
  {
    auto gone = must(UdpSocket::bind("127.0.0.1", 0));
    port = gone.local_address().port();
  }
  auto client = must(tether::udp_connect("127.0.0.1", port));
  TT_ASSERT_OK(client.send("anyone?", 10s));
  std::array<std::byte, 16> buf;
  auto r = client.recv(buf, 10s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), std::errc::connection_refused);
  EXPECT_NE(r.error().message().find("ICMP port unreachable"), std::string::npos)
      << r.error().message();
}

TEST_F(Udp, AddressesParseAndCompare) {
  auto a = must(InetAddress::parse("127.0.0.1", 5000));
  EXPECT_EQ(a.describe(), "127.0.0.1:5000");
  EXPECT_FALSE(a.is_v6());
  auto b = must(InetAddress::parse("::1", 5000));
  EXPECT_EQ(b.describe(), "[::1]:5000");
  EXPECT_TRUE(b.is_v6());
  EXPECT_FALSE(a == b);
  EXPECT_TRUE(a == must(InetAddress::parse("127.0.0.1", 5000)));
  EXPECT_FALSE(a == must(InetAddress::parse("127.0.0.1", 5001)));
  auto bad = InetAddress::parse("localhost", 1);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(), std::errc::invalid_argument);
}

// getaddrinfo's own error, not an errno it does not mean.
TEST_F(Udp, UnresolvableHostKeepsTheResolversError) {
  auto r = tether::udp_connect("no-such-host.invalid", 9);
  ASSERT_FALSE(r);
  EXPECT_EQ(&r.error().code().category(), &tether::resolver_category()) << r.error().message();
  EXPECT_FALSE(r.error() == std::errc::host_unreachable);
  EXPECT_NE(r.error().message().find("resolve no-such-host.invalid:9: "), std::string::npos);
  EXPECT_NE(r.error().message().find(::gai_strerror(r.error().code().value())), std::string::npos)
      << r.error().message();
}

// ---------------------------------------------------------------- udp:// channels

using UdpChannel = Clean;

TEST_F(UdpChannel, FirstDatagramYieldsAChannelToItsSender) {
  auto listener = must(ChannelListener::listen("udp://127.0.0.1:0"));
  EXPECT_NE(listener.address(), "udp://127.0.0.1:0");  // the real port
  auto client = must(Channel::connect(listener.address(), 10s));
  EXPECT_EQ(client.max_message(), tether::udp_max_payload_v4);
  TT_ASSERT_OK(client.send("hello", 10s));  // the client speaks first
  auto server = must(listener.accept(10s));
  EXPECT_EQ(must(server.recv_string(10s)), "hello");  // the datagram accept saw
  TT_ASSERT_OK(server.send("welcome", 10s));
  EXPECT_EQ(must(client.recv_string(10s)), "welcome");
  TT_ASSERT_OK(client.send(std::span<const std::byte>(), 10s));
  EXPECT_EQ(must(server.recv(10s)).size(), 0u);  // an empty message is one
  TT_EXPECT_ERROR(server.recv(20ms), std::errc::timed_out);
  TT_EXPECT_ERROR(server.try_recv(), std::errc::resource_unavailable_try_again);
}

TEST_F(UdpChannel, Ipv6) {
  auto listener = ChannelListener::listen("udp://[::1]:0");
  if (!listener) GTEST_SKIP() << "no IPv6 loopback here: " << listener.error().message();
  EXPECT_TRUE(listener->address().starts_with("udp://[::1]:"));
  auto client = must(Channel::connect(listener->address(), 10s));
  EXPECT_EQ(client.max_message(), tether::udp_max_payload_v6);
  TT_ASSERT_OK(client.send("six", 10s));
  auto server = must(listener->accept(10s));
  EXPECT_EQ(must(server.recv_string(10s)), "six");
}

// Datagrams from others that were queued before accept connected the
// socket are not the accepted peer's: the channel drops them.
TEST_F(UdpChannel, AcceptedChannelHearsOnlyItsPeer) {
  auto listener = must(ChannelListener::listen("udp://127.0.0.1:0"));
  auto port = static_cast<std::uint16_t>(
      std::stoi(listener.address().substr(listener.address().rfind(':') + 1)));
  auto first = must(tether::udp_connect("127.0.0.1", port));
  auto other = must(tether::udp_connect("127.0.0.1", port));
  TT_ASSERT_OK(first.send("a1", 10s));
  TT_ASSERT_OK(other.send("b1", 10s));
  TT_ASSERT_OK(first.send("a2", 10s));
  auto server = must(listener.accept(10s));
  EXPECT_EQ(must(server.recv_string(10s)), "a1");
  EXPECT_EQ(must(server.recv_string(10s)), "a2");
  TT_EXPECT_ERROR(server.recv(20ms), std::errc::timed_out);
  // One socket, one peer: the listener has nothing left to accept with.
  auto again = listener.accept(20ms);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error(), std::errc::already_connected);
  EXPECT_NE(again.error().message().find("serves one peer"), std::string::npos)
      << again.error().message();
  EXPECT_EQ(listener.fd(), -1);
}

TEST_F(UdpChannel, OversizedMessagesAreRefusedOnBothEnds) {
  auto listener = must(ChannelListener::listen("udp://127.0.0.1:0", {.max_message = 100}));
  auto client = must(Channel::connect(listener.address(), 10s));  // the default: 65507
  auto sent = client.send(std::string(tether::udp_max_payload_v4 + 1, 'x'), 10s);
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error(), std::errc::message_size);
  EXPECT_NE(sent.error().message().find("exceeds the maximum of 65507 bytes"), std::string::npos)
      << sent.error().message();
  TT_ASSERT_OK(client.send(std::string(101, 'y'), 10s));
  TT_ASSERT_OK(client.send("fits", 10s));
  auto server = must(listener.accept(10s));
  auto big = server.recv(10s);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error(), std::errc::message_size);
  EXPECT_NE(big.error().message().find("a 101-byte datagram exceeds the maximum of 100"),
            std::string::npos)
      << big.error().message();
  EXPECT_EQ(must(server.recv_string(10s)), "fits");  // not broken: boundaries are the kernel's
}

TEST_F(UdpChannel, OverAUdpSocketOfYourOwn) {
  auto unconnected = must(UdpSocket::bind("127.0.0.1", 0));
  auto refused = Channel::over_udp(std::move(unconnected));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error(), std::errc::destination_address_required);
  auto a = must(UdpSocket::bind("127.0.0.1", 0));
  auto b = must(UdpSocket::bind("127.0.0.1", 0));
  TT_ASSERT_OK(a.connect(b.local_address()));
  TT_ASSERT_OK(b.connect(a.local_address()));
  auto ca = must(Channel::over_udp(std::move(a)));
  auto cb = must(Channel::over_udp(std::move(b)));
  TT_ASSERT_OK(ca.send("over my own socket", 10s));
  EXPECT_EQ(must(cb.recv_string(10s)), "over my own socket");
}
