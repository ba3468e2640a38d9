// Links tether::supervise: its names check, from the installed or the
// sub-project library.
#include <tether/supervise.hpp>

#include <cstdio>

int main() {
  bool ok = tether::check_worker_name("web").empty() && !tether::check_worker_name("").empty();
  std::printf("consumer_supervise: %s\n", ok ? "names checked" : "wrong answer");
  return ok ? 0 : 1;
}
