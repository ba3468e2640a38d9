#include "tether/sys/backoff.hpp"

#include <thread>

namespace tether {

bool Backoff::wait(Deadline deadline) {
  if (deadline.expired()) return false;
  // std::this_thread::sleep_for resumes nanosleep(2) after EINTR with the time left.
  std::this_thread::sleep_for(std::min<Deadline::clock::duration>(next(), deadline.remaining()));
  return true;
}

}  // namespace tether
