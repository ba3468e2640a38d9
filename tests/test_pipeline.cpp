#include "support.hpp"

using namespace std::chrono_literals;
using tether::Command;
using tether::Pipeline;
using tether::Stdio;
using tether_test::Clean;
using tether_test::helper;
using tether_test::must;

using PipelineTest = Clean;

TEST_F(PipelineTest, TwoStagesLikePsGrep) {
  auto pipeline =
      Command("printf").arg("init\\nbash\\npython\\nbash -l\\n") | Command("grep").arg("bash");
  EXPECT_EQ(pipeline.describe(), "printf init\\nbash\\npython\\nbash -l\\n | grep bash");
  auto out = must(pipeline.output());
  EXPECT_EQ(out.out, "bash\nbash -l\n");
  ASSERT_EQ(out.statuses.size(), 2u);
  EXPECT_TRUE(out.success());
}

TEST_F(PipelineTest, EveryStageStatusIsReported) {
  // The first stage succeeds without writing (a writer could race the
  // middle stage's death and take a SIGPIPE), the middle stage dies by a
  // signal, grep finds nothing (1).
  auto out = must((Command("true") | helper("signal", {"15"}) | Command("grep").arg("y")).output());
  ASSERT_EQ(out.statuses.size(), 3u);
  EXPECT_EQ(out.statuses[0].code(), 0);
  EXPECT_EQ(out.statuses[1].signal(), SIGTERM);
  EXPECT_EQ(out.statuses[2].code(), 1);
  EXPECT_FALSE(out.success());
}

TEST_F(PipelineTest, InputFlowsThroughThreeStages) {
  std::string input;
  for (int i = 0; i < 20000; ++i) input += std::to_string(i) + "\n";
  auto out = must(
      (helper("echo") | Command("grep").arg("7") | Command("wc").arg("-l")).output(input, 60s));
  int expected = 0;
  for (int i = 0; i < 20000; ++i) expected += std::to_string(i).find('7') != std::string::npos;
  EXPECT_EQ(std::stoi(out.out), expected);
  EXPECT_TRUE(out.success());
}

TEST_F(PipelineTest, EndOfFileReachesTheLastStage) {
  // If the parent kept a copy of a pipe's write end, `cat` would never end.
  auto running = must(
      (Command("cat") | Command("cat")).stdin_from(Stdio::pipe()).stdout_to(Stdio::pipe()).spawn());
  TT_ASSERT_OK(tether::PipeWriter(std::move(running.stdin_fd)).write_all("through\n"));
  // The writer was closed when the temporary died: end of input.
  EXPECT_EQ(must(tether::PipeReader(std::move(running.stdout_fd)).read_all(10s)), "through\n");
  for (auto& st : must(running.wait(10s))) EXPECT_TRUE(st.success());
}

TEST_F(PipelineTest, FailedStageLeavesNothingRunning) {
  auto r = (Command("sleep").arg("30") | Command("/no/such/stage") | Command("cat")).spawn();
  ASSERT_FALSE(r);
  TT_EXPECT_ERROR(r, std::errc::no_such_file_or_directory);
  EXPECT_NE(r.error().message().find("spawn pipeline sleep 30 | /no/such/stage | cat"),
            std::string::npos)
      << r.error().message();
  EXPECT_FALSE(tether_test::has_children());
}

TEST_F(PipelineTest, OneProcessGroupForTheJob) {
  auto running =
      must((helper("sleep", {"20000"}) | helper("sleep", {"20000"})).new_process_group().spawn());
  pid_t group = running.stages[0].pid();
  EXPECT_EQ(running.stages[0].process_group(), group);
  EXPECT_EQ(running.stages[1].process_group(), group);
  EXPECT_EQ(getpgid(running.stages[1].pid()), group);
  TT_ASSERT_OK(running.stages[0].signal_group(SIGKILL));
  for (auto& st : must(running.wait(10s))) EXPECT_EQ(st.signal(), SIGKILL);
}

TEST_F(PipelineTest, EmptyPipelineIsAnError) {
  auto r = Pipeline().spawn();
  ASSERT_FALSE(r);
  TT_EXPECT_ERROR(r, std::errc::invalid_argument);
}

TEST_F(PipelineTest, DeadlineKillsEveryStage) {
  auto r = (helper("sleep", {"20000"}) | Command("cat")).output({}, 100ms);
  ASSERT_FALSE(r);
  TT_EXPECT_ERROR(r, std::errc::timed_out);
  EXPECT_FALSE(tether_test::has_children());
}
