// fuzz_control: the supervisor's control protocol — tether::LineReader
// (both Overlong modes) over the input cut into chunks, then
// parse_control_line on every whole line and parse_control_letter on every
// byte, as the supervisor reads its control FIFO.
//
// Input: [max_line] [mode] [chunking seed] then the bytes. LineReader's
// output is compared with a reference model written from its contract
// (sys.hpp): no line longer than max_line, none holding a newline; in split
// mode the pieces, each followed by its newline unless cut, plus what is
// left partial, give back every byte; in discard mode an overlong line
// gives its first max_line bytes once, cut, and nothing more; the result
// does not depend on how the bytes were chunked.
#include <string>
#include <vector>

#include "check.hpp"
#include "table.hpp"
#include "tether/sys.hpp"

namespace {

using tether::LineReader;
using tether::supervise_detail::ControlCommand;
using tether::supervise_detail::Event;
using tether::supervise_detail::kEventCount;

struct Piece {
  std::string text;
  bool cut;
  friend bool operator==(const Piece&, const Piece&) = default;
};

struct Model {
  std::vector<Piece> pieces;
  std::string partial;
};

Model reference(std::string_view s, std::size_t max, LineReader::Overlong mode) {
  Model m;
  auto emit = [&](std::string_view line, bool complete) {
    if (mode == LineReader::Overlong::discard) {
      if (line.size() > max) {
        m.pieces.push_back({std::string(line.substr(0, max)), true});
      } else if (complete) {
        m.pieces.push_back({std::string(line), false});
      } else {
        m.partial = line;
      }
      return;
    }
    while (line.size() > max) {
      m.pieces.push_back({std::string(line.substr(0, max)), true});
      line.remove_prefix(max);
    }
    if (complete)
      m.pieces.push_back({std::string(line), false});
    else
      m.partial = line;
  };
  for (;;) {
    auto nl = s.find('\n');
    if (nl == std::string_view::npos) break;
    emit(s.substr(0, nl), true);
    s.remove_prefix(nl + 1);
  }
  emit(s, false);
  return m;
}

bool within(std::string_view part, std::string_view whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

bool is_static(std::string_view why) {
  return why.empty() || (why.find('\0') == std::string_view::npos && why.size() < 100);
}

void check_command(std::string_view line) {
  ControlCommand c = tether::supervise_detail::parse_control_line(line);
  ControlCommand again = tether::supervise_detail::parse_control_line(line);
  FUZZ_CHECK(c.kind == again.kind && c.event == again.event && c.signal == again.signal &&
                 c.text == again.text && c.word == again.word,
             "parse_control_line is not deterministic");
  FUZZ_CHECK(within(c.text, line) && within(c.word, line), "a view outside the line");
  switch (c.kind) {
    case ControlCommand::Kind::event:
      FUZZ_CHECK(static_cast<int>(c.event) < kEventCount, "event %d", static_cast<int>(c.event));
      // Commands name only what a client may ask for, never a loop event.
      FUZZ_CHECK(c.event == Event::up || c.event == Event::once || c.event == Event::down ||
                     c.event == Event::exit || c.event == Event::restart,
                 "a command gave event %.*s",
                 static_cast<int>(tether::supervise_detail::to_string(c.event).size()),
                 tether::supervise_detail::to_string(c.event).data());
      break;
    case ControlCommand::Kind::signal:
      FUZZ_CHECK(c.signal > 0 && c.signal < 65, "signal %d", c.signal);
      break;
    case ControlCommand::Kind::send:
      FUZZ_CHECK(c.word == "send", "send from verb '%.*s'", static_cast<int>(c.word.size()),
                 c.word.data());
      break;
    case ControlCommand::Kind::bad:
      FUZZ_CHECK(!c.why.empty() && is_static(c.why), "a refusal without a reason");
      break;
  }
}

void check_letter(char ch) {
  ControlCommand c = tether::supervise_detail::parse_control_letter(ch);
  if (c.kind == ControlCommand::Kind::signal) {
    FUZZ_CHECK(c.signal > 0 && c.signal < 65, "letter %d: signal %d", ch, c.signal);
  }
  FUZZ_CHECK(c.kind != ControlCommand::Kind::send, "letter %d: send", ch);
  if (c.kind == ControlCommand::Kind::bad) FUZZ_CHECK(!c.why.empty(), "letter: no reason");
  // A line of one letter means what the letter means.
  std::string_view one(&ch, 1);
  if (c.kind != ControlCommand::Kind::bad && ch != '\r') {
    ControlCommand l = tether::supervise_detail::parse_control_line(one);
    FUZZ_CHECK(l.kind == c.kind && l.event == c.event && l.signal == c.signal,
               "letter %d and the line '%c' differ", ch, ch);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  std::size_t max = in.byte();
  auto mode = in.byte() & 1 ? LineReader::Overlong::discard : LineReader::Overlong::split;
  std::uint32_t seed = in.byte();
  std::string_view bytes = in.rest();
  std::size_t effective = max == 0 ? 1 : max;  // LineReader takes 0 as 1

  for (char ch : bytes.substr(0, 64)) check_letter(ch);

  LineReader reader(max, mode);
  std::vector<Piece> got;
  std::string_view rest = bytes;
  while (!rest.empty()) {
    // Chunk sizes from a small LCG: 1 to 64 bytes, varied within one input.
    seed = seed * 1103515245u + 12345u;
    std::size_t n = std::min<std::size_t>(rest.size(), 1 + (seed >> 16) % 64);
    reader.feed(rest.substr(0, n));
    rest.remove_prefix(n);
    while (auto line = reader.next()) {
      FUZZ_CHECK(line->text.size() <= effective, "a line of %zu bytes, max_line %zu",
                 line->text.size(), effective);
      FUZZ_CHECK(line->text.find('\n') == std::string_view::npos, "a newline inside a line");
      FUZZ_CHECK(!line->cut || line->text.size() == effective, "a cut piece of %zu bytes",
                 line->text.size());
      if (!line->cut) check_command(line->text);
      got.push_back({std::string(line->text), line->cut});
    }
  }
  std::size_t held = reader.partial_size();
  std::string partial = reader.take_partial();
  FUZZ_CHECK(reader.partial_size() == 0, "take_partial left %zu bytes", reader.partial_size());
  FUZZ_CHECK(!reader.next().has_value(), "a line after take_partial");

  Model want = reference(bytes, effective, mode);
  FUZZ_CHECK(got.size() == want.pieces.size(), "%zu pieces, the model has %zu", got.size(),
             want.pieces.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    FUZZ_CHECK(got[i] == want.pieces[i], "piece %zu differs from the model", i);
  }
  FUZZ_CHECK(partial == want.partial, "partial of %zu bytes, the model has %zu", partial.size(),
             want.partial.size());
  if (mode == LineReader::Overlong::split) {
    FUZZ_CHECK(held == partial.size(), "partial_size %zu, take_partial %zu", held, partial.size());
    // Bytes in = bytes out.
    std::string out;
    for (const auto& p : got) out += p.text + (p.cut ? "" : "\n");
    out += partial;
    FUZZ_CHECK(out == bytes, "split mode lost or added bytes: %zu in, %zu out", bytes.size(),
               out.size());
  }
  return 0;
}
