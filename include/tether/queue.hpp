// tether/queue.hpp — shared-memory objects between processes, with no
// daemon and no server process: the Queue (multiprocessing.Queue and
// JoinableQueue), Value and Array (multiprocessing.Value/Array), and Dict
// (Manager().dict()).
#pragma once

#include "tether/queue/dict.hpp"
#include "tether/queue/queue.hpp"
#include "tether/queue/value.hpp"
