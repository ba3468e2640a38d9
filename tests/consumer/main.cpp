// Built against an installed tether, by CMake package and by pkg-config.
#include <tether/tether.hpp>

#include <cstdio>

int main() {
  auto status = tether::Command("sh").args({"-c", "exit 7"}).status();
  if (!status) {
    std::printf("consumer: %s\n", status.error().message().c_str());
    return 1;
  }
  std::printf("consumer: %s (tether %s)\n", status->describe().c_str(), TETHER_VERSION_STRING);
  return 0;
}
