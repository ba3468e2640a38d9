// exec a program by path (like execl) and by PATH lookup (like execlp).
#include <cstdio>

#include <tether/process.hpp>

int main() {
  auto by_path = tether::Command("/bin/echo").arg("run by path").output().value();
  auto by_lookup = tether::Command("echo").arg("found in $PATH").output().value();
  std::printf("%s%s", by_path.out.c_str(), by_lookup.out.c_str());
  auto missing = tether::Command("no-such-program").spawn();
  std::printf("%s\n", missing ? "??" : missing.error().message().c_str());
}
