// tether/tether.hpp — everything.
#pragma once

#include "tether/channel.hpp"
#include "tether/process.hpp"
#include "tether/queue.hpp"
#include "tether/shm.hpp"
#include "tether/supervise.hpp"
#include "tether/sync.hpp"
#include "tether/sys.hpp"
#include "tether/version.hpp"
