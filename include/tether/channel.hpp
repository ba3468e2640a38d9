// tether/channel.hpp — kernel transports. For now: anonymous pipes.
#pragma once

#include "tether/channel/pipe.hpp"
