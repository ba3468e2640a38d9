// Writes the valid seeds of fuzz/corpus/{launch,status}/ with the library's
// own encoders, so the seeds follow the formats as they change:
//   build/fuzz/fuzz/fuzz_make_corpus fuzz/corpus
// (The invalid seeds, and those of the other targets, are files of their own.)
#include <filesystem>
#include <fstream>
#include <string>

#include "internal.hpp"
#include "tether/supervise/launch.hpp"

namespace fs = std::filesystem;
namespace launch = tether::launch;
namespace sd = tether::supervise_detail;

namespace {

void write(const fs::path& file, char prefix, const std::string& text) {
  std::ofstream out(file, std::ios::binary);
  if (prefix != 0) out.put(prefix);
  out << text;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  fs::path root = argv[1];
  fs::create_directories(root / "launch");
  fs::create_directories(root / "status");

  tether::SupervisorSpec demo;
  demo.id = "0a1b2c3d";
  demo.name = "demo";
  demo.command = {"/usr/bin/tether", "_demo-worker"};
  tether::SupervisorSpec web = demo;
  web.id = "deadbeef";
  web.name = "web-1";
  web.unique_name = true;
  web.command = {"python3", "-m", "http.server", "8000"};
  web.env = {{"PORT", "8000"}, {"LANG", "C.UTF-8"}};
  web.cwd = "/srv/www";
  web.restart = tether::RestartPolicy::always;
  web.max_restarts = 5;
  web.wait_ready = true;
  web.tty = true;
  web.ready_fd = 7;
  web.log_keep = 0;
  // The first byte picks the decoder: 0 spec, 1 launch, 2 report.
  write(root / "launch" / "spec-demo", 0, launch::encode_spec(demo));
  write(root / "launch" / "spec-web", 0, launch::encode_spec(web));
  write(root / "launch" / "launch-two", 1,
        launch::encode_launch({"/run/user/1000/tether", {demo, web}}));
  launch::Report ok{launch::Report::Kind::ok, "deadbeef", 4242, 4241, {}};
  launch::Report forked{launch::Report::Kind::forked, "0a1b2c3d", 0, 4300, {}};
  launch::Report error{launch::Report::Kind::error, "-", 0, 0, "spawn /no/such: ENOENT"};
  for (auto [name, r] :
       {std::pair{"report-ok", ok}, {"report-forked", forked}, {"report-error", error}}) {
    std::string line = launch::encode_report(r);
    line.pop_back();  // decode_report takes a line without its newline
    write(root / "launch" / name, 2, line);
  }

  tether::WorkerInfo w;
  w.id = "deadbeef";
  w.name = "web-1";
  w.state = tether::WorkerState::up;
  w.want = tether::Want::up;
  w.pid = 4242;
  w.pid_start = 123456;
  w.supervisor_pid = 4241;
  w.since_ms = 1764633600000;
  w.started_ms = 1764633600000;
  w.restarts = 2;
  w.restart_policy = tether::RestartPolicy::always;
  w.command = {"python3", "-m", "http.server"};
  write(root / "status" / "up", 0, sd::encode_status(w));
  w.state = tether::WorkerState::down;
  w.want = tether::Want::down;
  w.pid = 0;
  w.last_exit_code = 0;
  write(root / "status" / "down-exit-0", 0, sd::encode_status(w));
  w.state = tether::WorkerState::backoff;
  w.last_exit_code.reset();
  w.last_exit_signal = 9;
  write(root / "status" / "backoff-killed", 0, sd::encode_status(w));
  return 0;
}
