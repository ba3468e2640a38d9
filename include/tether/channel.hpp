// tether/channel.hpp — kernel transports: anonymous pipes and FIFOs.
#pragma once

#include "tether/channel/fifo.hpp"
#include "tether/channel/pipe.hpp"
