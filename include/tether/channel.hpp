// tether/channel.hpp — kernel transports: anonymous pipes, FIFOs, sockets.
#pragma once

#include "tether/channel/channel.hpp"
#include "tether/channel/fifo.hpp"
#include "tether/channel/message_queue.hpp"
#include "tether/channel/pipe.hpp"
#include "tether/channel/socket.hpp"
#include "tether/channel/transport.hpp"
