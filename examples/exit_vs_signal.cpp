// A child killed by signal 9 is told apart from one that exits with 137.
#include <signal.h>

#include <cstdio>

#include <tether/process.hpp>

int main() {
  auto by_code = tether::Command("sh").args({"-c", "exit 137"}).status().value();
  auto sleeper = tether::Command("sleep").arg("60").spawn().value();
  sleeper.signal(SIGKILL).value();
  auto by_signal = sleeper.wait().value();
  for (const auto& st : {by_code, by_signal}) {
    std::printf("%-26s code=%-4s signal=%s\n", st.describe().c_str(),
                st.code() ? std::to_string(*st.code()).c_str() : "-",
                st.signal() ? tether::signal_name(*st.signal()).c_str() : "-");
  }
}
