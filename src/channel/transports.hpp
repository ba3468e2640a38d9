// Private to the channel layer: the Transport of each kernel mechanism
// (see tether/channel/transport.hpp), made by these functions.
//
//   stream.cpp      one stream framer over two byte-stream mechanisms:
//                   pipe ends (pipe, FIFO) and stream sockets (Unix, TCP)
//   transports.cpp  seqpacket, UDP, POSIX queue, System V queue
//
// Why virtual calls and not a variant: one indirect call per message costs
// about a nanosecond next to the microseconds of the system call it leads
// to (bench_channel: docs/benchmarks.md), it needs no allocation per
// message (the transport is allocated once, with the channel), and it keeps
// every transport type out of the public header, so that a transport of
// another layer (the shared-memory queue) plugs in through Channel::over().
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "tether/channel/channel.hpp"

namespace tether::detail {

// What a ChannelListener listens with: one kind per transport.
class ListenPort {
 public:
  virtual ~ListenPort() = default;
  virtual Result<Channel> accept(Deadline deadline, const ChannelOptions& options) = 0;
  virtual int fd() const noexcept = 0;
};

// shm:/name, from the queue layer (src/queue/shm_channel.cpp): the one
// place where the channel layer calls a layer below it, because its
// address table names every transport.
Result<Channel> shm_connect(const std::string& name, Deadline deadline,
                            const ChannelOptions& options);
Result<std::unique_ptr<ListenPort>> shm_listen(const std::string& name,
                                               const ChannelOptions& options);

// Asks for kernel buffers of options.buffer_size on a socket: a request,
// not a requirement (the kernel caps it at net.core.[rw]mem_max).
void tune_socket_buffers(int fd, const ChannelOptions& options);

// Two pipe ends, either of which may be missing (a one-way channel): made
// non-blocking, every wait a poll with the caller's deadline.
Result<std::unique_ptr<Transport>> pipe_transport(Fd in, Fd out, std::string what,
                                                  const ChannelOptions& options);
// A connected stream socket (Unix stream, TCP): stays blocking; a call
// passes MSG_DONTWAIT only when a deadline must be kept.
std::unique_ptr<Transport> stream_socket_transport(Fd socket, std::string what,
                                                   const ChannelOptions& options);
// A connected seqpacket socket: one message per packet.
std::unique_ptr<Transport> seqpacket_transport(Fd socket, std::string what,
                                               const ChannelOptions& options);
// A connected UDP socket: one message per datagram (options.max_message
// already capped at the largest payload).
std::unique_ptr<Transport> datagram_transport(Fd socket, std::string what,
                                              const ChannelOptions& options,
                                              const std::optional<InetAddress>& only_from);
// Two POSIX queues, opened (not owned: the listener owns the names).
std::unique_ptr<Transport> posix_queue_transport(PosixQueue in, PosixQueue out, std::string what);
// One System V queue (not owned), messages of `send_type` out, `recv_type` in.
std::unique_ptr<Transport> sysv_transport(int id, long send_type, long recv_type, std::string what);

}  // namespace tether::detail
