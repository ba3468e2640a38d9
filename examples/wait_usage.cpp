// wait4-style: how a child ended and what it used (CPU time, memory, faults).
#include <cstdio>

#include <tether/process.hpp>

int main() {
  // A shell loop that burns some CPU.
  auto status = tether::Command("sh")
                    .args({"-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"})
                    .status()
                    .value();
  const auto& u = status.usage();
  std::printf("child %d %s\n", status.pid(), status.describe().c_str());
  std::printf("user cpu %ld us, system cpu %ld us, max rss %ld KiB, minor faults %ld\n",
              static_cast<long>(u.user_cpu.count()), static_cast<long>(u.system_cpu.count()),
              u.max_rss_kib, u.minor_faults);
  std::printf("used cpu: %s\n", u.user_cpu.count() + u.system_cpu.count() > 0 ? "yes" : "no");
}
