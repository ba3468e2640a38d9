#include <fmt/format.h>

#include "internal.hpp"

namespace tether {

std::string Pipeline::describe() const {
  std::string text;
  for (const auto& c : stages_) {
    if (!text.empty()) text += " | ";
    text += c.describe();
  }
  return text;
}

bool Pipeline::Outputs::success() const noexcept {
  for (const auto& s : statuses) {
    if (!s.success()) return false;
  }
  return !statuses.empty();
}

Result<Pipeline::Running> Pipeline::spawn() const {
  if (stages_.empty()) return fail(EINVAL, "spawn pipeline: no commands");
  Running running;
  Fd feed;  // read end of the pipe into the next stage
  pid_t group = 0;
  for (std::size_t i = 0; i < stages_.size(); ++i) {
    Command c = stages_[i];
    c.stdin_ = i == 0 ? stdin_ : Stdio::fd(feed.get());
    Fd next_feed, write_end;
    if (i + 1 == stages_.size()) {
      c.stdout_ = stdout_;
    } else {
      auto p = make_pipe();
      if (!p) return fail(p.error(), "spawn pipeline " + describe());
      next_feed = std::move(p->first);
      write_end = std::move(p->second);
      c.stdout_ = Stdio::fd(write_end.get());
    }
    if (new_group_) c.pgid_ = group;  // 0 for the first: it leads the group
    // On failure, stages already running are killed and reaped by their
    // Process destructors when `running` goes out of scope.
    auto proc = c.spawn();
    if (!proc) return fail(proc.error(), "spawn pipeline " + describe());
    if (new_group_ && i == 0) group = proc->pid();
    if (new_group_) proc->pgid_ = group;
    if (i == 0) running.stdin_fd = std::move(proc->stdin_fd());
    if (i + 1 == stages_.size()) running.stdout_fd = std::move(proc->stdout_fd());
    running.stages.push_back(std::move(*proc));
    // Our copies of the pipe ends close here: each end now lives only in
    // the stage that uses it, so end of file propagates down the line.
    feed = std::move(next_feed);
  }
  return running;
}

Result<std::vector<ExitStatus>> Pipeline::Running::wait(Deadline deadline) {
  std::vector<ExitStatus> statuses;
  for (auto& stage : stages) {
    auto st = stage.wait(deadline);
    if (!st) return std::unexpected(st.error());
    statuses.push_back(*st);
  }
  return statuses;
}

Result<Pipeline::Outputs> Pipeline::output(std::string_view input, Deadline deadline) const {
  Pipeline p = *this;
  if (p.stdin_.kind() == Stdio::Kind::inherit) p.stdin_ = Stdio::pipe();
  if (p.stdout_.kind() == Stdio::Kind::inherit) p.stdout_ = Stdio::pipe();
  auto running = p.spawn();
  if (!running) return std::unexpected(running.error());
  Outputs result;
  Fd no_stderr;
  std::string unused;
  auto pumped = detail::pump(running->stdin_fd, input, running->stdout_fd, result.out, no_stderr,
                             unused, deadline, "pipeline " + describe());
  if (!pumped) return std::unexpected(pumped.error());  // stages killed on drop
  auto statuses = running->wait(deadline);
  if (!statuses) return std::unexpected(statuses.error());
  result.statuses = std::move(*statuses);
  return result;
}

}  // namespace tether
