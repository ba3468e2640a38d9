// fuzz_launch: both protocols between `tether open` and its supervisors
// (tether/supervise/launch.hpp): a spec (one JSON line), a launch (a header
// line, then the specs) and a report line. Whatever decodes is encoded
// again and decoded again: the second encoding must equal the first (a
// stable round trip), and a report line must stay one line under PIPE_BUF.
//
// Input: [which] then the text; which 3 is a saved file (saved.hpp).
#include <limits.h>

#include <string>

#include "check.hpp"
#include "tether/supervise/launch.hpp"
#include "tether/supervise/saved.hpp"

namespace launch = tether::launch;

namespace {

void spec(std::string_view text) {
  auto s = launch::decode_spec(text);
  if (!s) return;
  std::string once = launch::encode_spec(*s);
  auto again = launch::decode_spec(once);
  FUZZ_CHECK(again.has_value(), "an encoded spec does not decode: %s\n%s",
             again.error().message().c_str(), once.c_str());
  std::string twice = launch::encode_spec(*again);
  FUZZ_CHECK(once == twice, "spec round trip unstable:\n%s\n%s", once.c_str(), twice.c_str());
  FUZZ_CHECK(once.find('\n') == std::string::npos, "an encoded spec holds a newline");
}

void launch_text(std::string_view text) {
  auto l = launch::decode_launch(text);
  if (!l) return;
  FUZZ_CHECK(!l->specs.empty(), "a launch of no spec decoded");
  std::string once = launch::encode_launch(*l);
  auto again = launch::decode_launch(once);
  FUZZ_CHECK(again.has_value(), "an encoded launch does not decode: %s",
             again.error().message().c_str());
  std::string twice = launch::encode_launch(*again);
  FUZZ_CHECK(once == twice, "launch round trip unstable");
}

void report(std::string_view line) {
  auto r = launch::decode_report(line);
  if (!r) return;
  FUZZ_CHECK(!r->id.empty() && r->id.find(' ') == std::string::npos, "report id '%s'",
             r->id.c_str());
  if (r->kind != launch::Report::Kind::error) {
    FUZZ_CHECK(r->supervisor > 0, "supervisor pid %d", r->supervisor);
  }
  // 0: a supervisor started down, no worker yet (SupervisorSpec::start_down).
  if (r->kind == launch::Report::Kind::ok) FUZZ_CHECK(r->worker >= 0, "worker pid %d", r->worker);
  std::string once = launch::encode_report(*r);
  FUZZ_CHECK(!once.empty() && once.back() == '\n', "a report without its newline");
  // Reports come off the pipe a line at a time: a line never holds a
  // newline, and its encoding is one line again.
  if (line.find('\n') == std::string_view::npos) {
    FUZZ_CHECK(once.find('\n') == once.size() - 1, "a report encoded as several lines");
    // Under PIPE_BUF when the id is a real one (ids are at most 64 bytes).
    if (r->id.size() <= 64) {
      FUZZ_CHECK(once.size() < PIPE_BUF, "a report line of %zu bytes", once.size());
    }
  }
  auto again = launch::decode_report(std::string_view(once).substr(0, once.size() - 1));
  FUZZ_CHECK(again.has_value(), "an encoded report does not decode: %s", once.c_str());
  FUZZ_CHECK(again->kind == r->kind && again->id == r->id && again->worker == r->worker &&
                 again->supervisor == r->supervisor,
             "report round trip changed it: %s", once.c_str());
  std::string twice = launch::encode_report(*again);
  FUZZ_CHECK(once == twice, "report round trip unstable:\n%s%s", once.c_str(), twice.c_str());
}

// A saved file (tether/supervise/saved.hpp): whatever decodes encodes to
// a text that decodes to the same workers.
void saved(std::string_view text) {
  auto s = tether::decode_saved(text, "saved.jsonl");
  if (!s) return;
  std::string once = tether::encode_saved(*s);
  auto again = tether::decode_saved(once, "saved.jsonl");
  FUZZ_CHECK(again.has_value(), "an encoded saved file does not decode: %s",
             again.error().message().c_str());
  FUZZ_CHECK(again->workers.size() == s->workers.size(), "saved round trip lost workers");
  FUZZ_CHECK(tether::encode_saved(*again) == once, "saved round trip unstable");
  // The start order covers every worker once, whatever `after` says.
  std::size_t n = 0;
  for (const auto& level : tether::start_levels(s->workers)) n += level.size();
  FUZZ_CHECK(n == s->workers.size(), "start_levels placed %zu of %zu", n, s->workers.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  std::uint8_t which = in.byte() % 4;
  std::string_view text = in.rest();
  switch (which) {
    case 0:
      spec(text);
      break;
    case 1:
      launch_text(text);
      break;
    case 2:
      report(text);
      break;
    case 3:
      saved(text);
      break;
  }
  return 0;
}
