// fuzz_status: status.json as clients read it (supervise_detail::decode_status,
// which must refuse anything malformed with bad_record and never throw; a
// supervisor, or anyone able to write a worker's directory, writes it).
// Whatever decodes is encoded with encode_status and decoded again: the
// two encodings must be equal, and the fields must be in their ranges.
#include <string>

#include "check.hpp"
#include "internal.hpp"

namespace sd = tether::supervise_detail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  static const std::filesystem::path shown = "fuzz/status.json";
  auto w = sd::decode_status(text, shown);
  if (!w) {
    FUZZ_CHECK(w.error() == tether::errc::bad_record, "refused with %s",
               w.error().message().c_str());
    return 0;
  }
  FUZZ_CHECK(w->pid >= 0 && w->supervisor_pid >= 0 && w->restarts >= 0, "a negative field");
  FUZZ_CHECK(w->state != tether::WorkerState::dead_supervisor, "state dead_supervisor decoded");
  if (w->last_exit_code) FUZZ_CHECK(*w->last_exit_code >= 0 && *w->last_exit_code <= 255, "code");
  if (w->last_exit_signal) {
    FUZZ_CHECK(*w->last_exit_signal >= 1 && *w->last_exit_signal <= 64, "signal");
  }
  std::string once = sd::encode_status(*w);
  auto again = sd::decode_status(once, shown);
  FUZZ_CHECK(again.has_value(), "an encoded record does not decode: %s\n%s",
             again.error().message().c_str(), once.c_str());
  std::string twice = sd::encode_status(*again);
  FUZZ_CHECK(once == twice, "status round trip unstable:\n%s%s", once.c_str(), twice.c_str());
  return 0;
}
