// A set's file (tether/supervise/file.hpp): tether.toml and Procfile, each
// bad file's message with its file, line and column.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tether/supervise/file.hpp"
#include "tether/supervise/saved.hpp"

namespace {

namespace fs = std::filesystem;

// A fresh directory for files that must exist on disk (cwd, env_file).
class SetFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tether-setfile-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path write(const std::string& name, const std::string& text) {
    fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p;
  }
  // The error of loading `text` as tether.toml.
  std::string error_of(const std::string& text) {
    auto set = tether::load_set_file(write("tether.toml", text));
    EXPECT_FALSE(set.has_value());
    if (set) return "";
    EXPECT_EQ(set.error(), tether::errc::bad_definition) << set.error().message();
    return set.error().message();
  }
  fs::path dir_;
};

TEST_F(SetFile, ParsesEveryKey) {
  write("app.env", "# comment\nexport A=1\nB='two words'\nC=\"q\\\"x\" \nD=plain # note\n");
  fs::create_directory(dir_ / "sub");
  auto set = tether::load_set_file(write("tether.toml", R"(
name = "shop"
[db]
command = ["/bin/sleep", "100"]
wait_ready = true
ready_fd = 5
[web]
command = "exec sleep 100"
count = 3
after = ["db"]
env = { PORT = 8080, DEBUG = true, B = "over" }
env_file = "app.env"
cwd = "sub"
restart = "always"
max_restarts = 7
grace = 1.5
log_size = "64K"
log_keep = 2
memory_limit = "256M"
tty = true
)"));
  ASSERT_TRUE(set.has_value()) << set.error().message();
  EXPECT_EQ(set->name, "shop");
  ASSERT_EQ(set->workers.size(), 2u);
  const auto& db = set->workers[0];
  EXPECT_EQ(db.name, "db");
  EXPECT_EQ(db.command, (std::vector<std::string>{"/bin/sleep", "100"}));
  EXPECT_TRUE(db.wait_ready);
  EXPECT_EQ(db.ready_fd, 5);
  EXPECT_EQ(db.cwd, dir_);
  const auto& web = set->workers[1];
  EXPECT_EQ(web.command, (std::vector<std::string>{"/bin/sh", "-c", "exec sleep 100"}));
  EXPECT_EQ(web.count, 3);
  EXPECT_EQ(web.after, std::vector<std::string>{"db"});
  EXPECT_EQ(web.cwd, dir_ / "sub");
  EXPECT_EQ(web.restart, tether::RestartPolicy::always);
  EXPECT_EQ(web.max_restarts, 7);
  EXPECT_EQ(web.grace, std::chrono::milliseconds(1500));
  EXPECT_EQ(web.log_size, 64u * 1024);
  EXPECT_EQ(web.log_keep, 2);
  EXPECT_EQ(web.memory_limit, 256u << 20);
  EXPECT_EQ(db.memory_limit, 0u);  // none unless given
  EXPECT_TRUE(web.tty);
  // env_file's first, env's own entries win.
  auto env = [&](const std::string& k) -> std::string {
    for (const auto& [n, v] : web.env) {
      if (n == k) return v;
    }
    return "<none>";
  };
  EXPECT_EQ(env("A"), "1");
  EXPECT_EQ(env("B"), "over");
  EXPECT_EQ(env("C"), "q\"x");
  EXPECT_EQ(env("D"), "plain");
  EXPECT_EQ(env("PORT"), "8080");
  EXPECT_EQ(env("DEBUG"), "true");

  auto levels = set->levels();
  ASSERT_EQ(levels.size(), 2u);
  EXPECT_EQ(levels[0], std::vector<std::size_t>{0});
  EXPECT_EQ(levels[1], std::vector<std::size_t>{1});

  auto specs = tether::instance_specs(*set, web, web.count);
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_EQ(specs[0].name, "web-1");
  EXPECT_EQ(specs[2].name, "web-3");
  EXPECT_TRUE(specs[1].unique_name);
  EXPECT_EQ(specs[1].set, "shop");
  EXPECT_EQ(specs[1].definition, "web");
  EXPECT_EQ(specs[1].after, std::vector<std::string>{"db"});
  EXPECT_EQ(specs[1].memory_limit, 256u << 20);
  EXPECT_EQ(tether::instance_name("db", 1, 1), "db");
}

TEST_F(SetFile, KeepsTheFilesOrderAndNamesTheSetAfterItsDirectory) {
  auto set =
      tether::load_set_file(write("tether.toml", "[zeta]\ncommand='a'\n[alpha]\ncommand='b'\n"));
  ASSERT_TRUE(set.has_value()) << set.error().message();
  ASSERT_EQ(set->workers.size(), 2u);
  EXPECT_EQ(set->workers[0].name, "zeta");
  EXPECT_EQ(set->workers[1].name, "alpha");
  EXPECT_EQ(set->name, dir_.filename().string());
  EXPECT_EQ(set->file, dir_ / "tether.toml");
}

TEST_F(SetFile, AnUnknownKeyIsNamedWithTheNearestKnownOne) {
  auto m = error_of("[web]\ncommand = 'x'\ncomand = 'y'\n");
  EXPECT_NE(m.find("tether.toml:3:1:"), std::string::npos) << m;
  EXPECT_NE(m.find("unknown key 'comand'"), std::string::npos) << m;
  EXPECT_NE(m.find("did you mean 'command'"), std::string::npos) << m;
  auto far = error_of("[web]\ncommand = 'x'\nzzzzzzzzzz = 1\n");
  EXPECT_NE(far.find("unknown key 'zzzzzzzzzz'"), std::string::npos) << far;
  EXPECT_EQ(far.find("did you mean"), std::string::npos) << far;
}

TEST_F(SetFile, AMissingCommandIsAnError) {
  auto m = error_of("[web]\ncount = 2\n");
  EXPECT_NE(m.find("tether.toml:1:2:"), std::string::npos) << m;
  EXPECT_NE(m.find("[web]: no command"), std::string::npos) << m;
  EXPECT_NE(error_of("[web]\ncommand = []\n").find("command is empty"), std::string::npos);
  EXPECT_NE(error_of("[web]\ncommand = '  '\n").find("command is empty"), std::string::npos);
  EXPECT_NE(error_of("[web]\ncommand = ['a', 1]\n").find("every word of command must be a string"),
            std::string::npos);
}

TEST_F(SetFile, ACountOfZeroIsAnError) {
  auto m = error_of("[web]\ncommand = 'x'\ncount = 0\n");
  EXPECT_NE(m.find("tether.toml:3:9:"), std::string::npos) << m;
  EXPECT_NE(m.find("count is 0"), std::string::npos) << m;
  EXPECT_NE(error_of("[web]\ncommand = 'x'\ninstances = -3\n").find("instances is -3"),
            std::string::npos);
  EXPECT_NE(error_of("[web]\ncommand = 'x'\ncount = 2\ninstances = 2\n").find("give one"),
            std::string::npos);
}

TEST_F(SetFile, ADuplicateNameIsAnError) {
  // Two tables may not share a name, nor may an instance's name.
  auto m = error_of("[a]\ncommand = 'x'\n[b]\nname = 'a'\ncommand = 'y'\n");
  EXPECT_NE(m.find("tether.toml:3:2:"), std::string::npos) << m;
  EXPECT_NE(m.find("the name 'a' is also the name of [a] (line 1)"), std::string::npos) << m;
  auto inst = error_of("[web]\ncommand = 'x'\ncount = 2\n[web-2]\ncommand = 'y'\n");
  EXPECT_NE(inst.find("'web-2'"), std::string::npos) << inst;
  // TOML itself refuses a table defined twice.
  auto twice = error_of("[a]\ncommand = 'x'\n[a]\ncommand = 'y'\n");
  EXPECT_NE(twice.find("tether.toml:3:"), std::string::npos) << twice;
}

TEST_F(SetFile, ACycleInAfterIsShownWhole) {
  auto m = error_of(
      "[a]\ncommand = 'x'\nafter = ['c']\n[b]\ncommand = 'x'\nafter = 'a'\n"
      "[c]\ncommand = 'x'\nafter = ['b']\n");
  EXPECT_NE(m.find("a cycle in after"), std::string::npos) << m;
  EXPECT_NE(m.find("a -> c -> b -> a"), std::string::npos) << m;
  EXPECT_NE(m.find("tether.toml:1:2:"), std::string::npos) << m;
  auto self = error_of("[a]\ncommand = 'x'\nafter = 'a'\n");
  EXPECT_NE(self.find("a -> a"), std::string::npos) << self;
  auto unknown = error_of("[a]\ncommand = 'x'\nafter = ['dbb']\n[db]\ncommand='y'\n");
  EXPECT_NE(unknown.find("after names 'dbb', which is not a worker of this file"),
            std::string::npos)
      << unknown;
}

TEST(ByteSize, ReadsWhatPeopleWrite) {
  EXPECT_EQ(tether::parse_byte_size("4096"), 4096u);
  EXPECT_EQ(tether::parse_byte_size("512K"), 512u << 10);
  EXPECT_EQ(tether::parse_byte_size("10M"), 10u << 20);
  EXPECT_EQ(tether::parse_byte_size("2 GiB"), 2ull << 30);
  EXPECT_EQ(tether::parse_byte_size("1GB"), 1ull << 30);
  for (const char* bad : {"", "M", "-1", "1.5G", "10Q", "1e9", "99999999999999999"}) {
    EXPECT_FALSE(tether::parse_byte_size(bad).has_value()) << bad;
  }
  EXPECT_FALSE(tether::parse_byte_size("999999999999999G").has_value());  // past 2^64
}

TEST_F(SetFile, WrongTypesAndRangesAreNamed) {
  EXPECT_NE(error_of("[w]\ncommand = 'x'\ncount = 'two'\n")
                .find("count must be an integer, not a string"),
            std::string::npos);
  EXPECT_NE(error_of("[w]\ncommand = 'x'\nrestart = 'alway'\n").find("did you mean 'always'"),
            std::string::npos);
  EXPECT_NE(error_of("[w]\ncommand = 'x'\nready_fd = 2\n").find("from 3 to 1023"),
            std::string::npos);
  EXPECT_NE(error_of("[w]\ncommand = 'x'\nlog_size = '10Q'\n").find("log_size must be"),
            std::string::npos);
  EXPECT_NE(error_of("[w]\ncommand = 'x'\nmemory_limit = 'lots'\n").find("memory_limit must be"),
            std::string::npos);
  EXPECT_NE(error_of("[w]\ncommand = 'x'\nmemory_limit = '512K'\n").find("from 1 MiB"),
            std::string::npos);
  EXPECT_NE(error_of("[w]\ncommand = 'x'\ngrace = -1\n").find("from 0 to 3600"), std::string::npos);
  EXPECT_NE(error_of("[w]\ncommand = 'x'\ncwd = 'nowhere'\n").find("is not a directory"),
            std::string::npos);
  EXPECT_NE(error_of("[w]\ncommand = 'x'\nenv_file = 'none.env'\n").find("env_file"),
            std::string::npos);
  EXPECT_NE(error_of("[w]\ncommand = 'x'\nname = 'bad name'\n").find("is not good"),
            std::string::npos);
  EXPECT_NE(error_of("count = 3\n[w]\ncommand = 'x'\n").find("outside any worker's table"),
            std::string::npos);
  EXPECT_NE(error_of("name = 'x'\n").find("no worker"), std::string::npos);
  // A TOML syntax error keeps toml++'s position.
  auto syntax = error_of("[w]\ncommand = 'x\n");
  EXPECT_NE(syntax.find("tether.toml:2:"), std::string::npos) << syntax;
}

// Inputs fuzz_setfile found reaching assertions and unreachable points of
// toml++ 3.3 (file.cpp): each is an error with its place, never a crash.
TEST_F(SetFile, HostileBytesAreErrorsNotCrashes) {
  auto nul = error_of(std::string("[a]\ncommand = 'x'\n[b\0]\n", 21));
  EXPECT_NE(nul.find("tether.toml:3:3: a control character (0x00)"), std::string::npos) << nul;
  auto esc = error_of("[a]\ncommand = '\x1b[2J'\n");
  EXPECT_NE(esc.find("tether.toml:2:12: a control character (0x1b)"), std::string::npos) << esc;
  auto bytes = error_of("[a]\ncommand = 'caf\xc3'\n");
  EXPECT_NE(bytes.find("tether.toml:2:15: bytes that are not UTF-8"), std::string::npos) << bytes;
  auto surrogate = error_of("[a]\ncommand = '\xed\xa0\x80'\n");
  EXPECT_NE(surrogate.find("not UTF-8"), std::string::npos) << surrogate;
  auto key = error_of("[ = { PORT = 1 }\n");
  EXPECT_NE(key.find("tether.toml:1:"), std::string::npos) << key;
  for (const char* text :
       {"[a]\nx = 0o\xc3\xa9\n", "[a]\nx = 0o\xef\xba\xbf\n", "[a]\nx = 1\xe3\x80\x81\n"}) {
    auto m = error_of(text);
    EXPECT_NE(m.find("tether.toml:2:"), std::string::npos) << m;
  }
  // Text that is UTF-8 is fine where TOML allows it.
  auto set = tether::parse_set_toml(
      "[caf\xc3\xa9]\ncommand = 'echo h\xc3\xa9llo'\n# \xe3\x80\x80\n", dir_ / "tether.toml");
  ASSERT_FALSE(set.has_value());  // a bare key must be ASCII
  auto quoted = tether::parse_set_toml(
      "[a]\ncommand = 'echo h\xc3\xa9llo \xef\xba\xbf'\n# \xe3\x80\x80\n", dir_ / "tether.toml");
  ASSERT_TRUE(quoted.has_value()) << quoted.error().message();
  EXPECT_EQ(quoted->workers[0].command.back(), "echo h\xc3\xa9llo \xef\xba\xbf");
}

TEST_F(SetFile, ABadEnvFileLineIsPlacedInThatFile) {
  write("bad.env", "A=1\n\nnot a pair\n");
  auto m = error_of("[w]\ncommand = 'x'\nenv_file = 'bad.env'\n");
  EXPECT_NE(m.find("bad.env:3:1: a line that is not NAME=VALUE"), std::string::npos) << m;
}

TEST_F(SetFile, WhatIsNotARegularFileIsRefusedUnread) {
  fs::path fifo = dir_ / "tether.toml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto set = tether::load_set_file(fifo);  // never blocks on the FIFO
  ASSERT_FALSE(set.has_value());
  EXPECT_NE(set.error().message().find("not a regular file"), std::string::npos);
  fs::path real = write("real.toml", "[w]\ncommand='x'\n");
  fs::path link = dir_ / "link.toml";
  fs::create_symlink(real, link);
  auto via_link = tether::load_set_file(link);
  ASSERT_FALSE(via_link.has_value());
  std::string big(2u << 20, '#');
  auto huge = tether::load_set_file(write("big.toml", big));
  ASSERT_FALSE(huge.has_value());
  EXPECT_NE(huge.error().message().find("more than"), std::string::npos);
}

TEST_F(SetFile, ReadsAProcfile) {
  auto set = tether::load_set_file(
      write("Procfile", "# the app\nweb: exec sleep 100 --port $PORT\n\nworker:   ./run.sh\r\n"));
  ASSERT_TRUE(set.has_value()) << set.error().message();
  ASSERT_EQ(set->workers.size(), 2u);
  EXPECT_EQ(set->workers[0].name, "web");
  EXPECT_EQ(set->workers[0].command,
            (std::vector<std::string>{"/bin/sh", "-c", "exec sleep 100 --port $PORT"}));
  EXPECT_EQ(set->workers[1].name, "worker");
  EXPECT_EQ(set->workers[1].command, (std::vector<std::string>{"/bin/sh", "-c", "./run.sh"}));
  EXPECT_EQ(set->workers[1].line, 4);

  auto bad = tether::load_set_file(write("Procfile.dev", "web: x\nno colon here\n"));
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("Procfile.dev:2:1: a line that is not 'name: command'"),
            std::string::npos)
      << bad.error().message();
  auto empty = tether::load_set_file(write("Procfile.e", "web:   \n"));
  ASSERT_FALSE(empty.has_value());
  EXPECT_NE(empty.error().message().find("no command after the colon"), std::string::npos);
  auto bytes = tether::load_set_file(write("Procfile.u", "web: echo \xff\n"));
  ASSERT_FALSE(bytes.has_value());
  EXPECT_NE(bytes.error().message().find(
                "Procfile.u:1:1: [web]: the command's word 2 is not valid UTF-8"),
            std::string::npos)
      << bytes.error().message();
  auto dup = tether::load_set_file(write("Procfile.d", "web: x\nweb: y\n"));
  ASSERT_FALSE(dup.has_value());
  EXPECT_NE(dup.error().message().find("Procfile.d:2:1:"), std::string::npos)
      << dup.error().message();
}

// ---------------------------------------------------------------- saved workers

tether::SupervisorSpec saved_spec(std::string name, std::string set, std::string definition,
                                  std::vector<std::string> after) {
  tether::SupervisorSpec s;
  s.id = "0000000" + std::to_string(name.size());
  s.name = std::move(name);
  s.command = {"sleep", "1"};
  s.set = std::move(set);
  s.definition = std::move(definition);
  s.after = std::move(after);
  return s;
}

TEST(Saved, StartLevelsFollowAfterWithinASetOnly) {
  std::vector<tether::SupervisorSpec> w = {
      saved_spec("web-1", "shop", "web", {"api"}), saved_spec("web-2", "shop", "web", {"api"}),
      saved_spec("api", "shop", "api", {"db"}),    saved_spec("db", "shop", "db", {}),
      saved_spec("lone", "", "", {"db"}),     // of no set: its after means nothing
      saved_spec("x", "other", "x", {"db"}),  // another set's db is not this one's
  };
  auto levels = tether::start_levels(w);
  ASSERT_EQ(levels.size(), 3u);
  EXPECT_EQ(levels[0], (std::vector<std::size_t>{3, 4, 5}));
  EXPECT_EQ(levels[1], (std::vector<std::size_t>{2}));
  EXPECT_EQ(levels[2], (std::vector<std::size_t>{0, 1}));
  // A cycle (a hand-edited file): every worker is still placed, once.
  std::vector<tether::SupervisorSpec> cycle = {saved_spec("a", "s", "a", {"b"}),
                                               saved_spec("b", "s", "b", {"a"})};
  std::size_t placed = 0;
  for (const auto& l : tether::start_levels(cycle)) placed += l.size();
  EXPECT_EQ(placed, 2u);
}

TEST(Saved, TheFileRoundTripsAndABadOneIsRefusedWithItsLine) {
  tether::SavedWorkers saved;
  saved.saved_ms = 42;
  saved.workers = {saved_spec("db", "shop", "db", {}), saved_spec("web", "shop", "web", {"db"})};
  auto text = tether::encode_saved(saved);
  auto back = tether::decode_saved(text, "f");
  ASSERT_TRUE(back.has_value()) << back.error().message();
  EXPECT_EQ(back->saved_ms, 42);
  ASSERT_EQ(back->workers.size(), 2u);
  EXPECT_EQ(back->workers[1].after, (std::vector<std::string>{"db"}));
  EXPECT_EQ(tether::encode_saved(*back), text);
  struct Case {
    std::string text, message;
  };
  for (const auto& c : std::vector<Case>{
           {"", "f:0: empty"},
           {"{}\n", "f:1: not a file of saved workers"},
           {"{\"kind\":\"tether saved workers\",\"version\":2}\n", "f:1: saved by another version"},
           {text + "{\"id\":", "f:4: the last line is cut short"},
           {text + "[1]\n", "f:4: "},
       }) {
    auto r = tether::decode_saved(c.text, "f");
    ASSERT_FALSE(r.has_value()) << c.text;
    EXPECT_EQ(r.error(), tether::errc::bad_record);
    EXPECT_NE(r.error().message().find(c.message), std::string::npos) << r.error().message();
  }
}

TEST(Saved, WriteReplacesTheFileWholeAndLeavesNoTemporaryFile) {
  auto root = fs::temp_directory_path() / ("tt-config-" + std::to_string(::getpid()));
  auto dir = tether::ConfigDir::open(root / "tether");  // its parent made too, 0700
  ASSERT_TRUE(dir.has_value()) << dir.error().message();
  struct stat st {};
  ASSERT_EQ(::stat(root.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  auto empty = tether::read_saved(*dir);
  ASSERT_TRUE(empty.has_value()) << empty.error().message();
  EXPECT_TRUE(empty->workers.empty());
  tether::SavedWorkers saved;
  saved.workers = {saved_spec("db", "shop", "db", {})};
  ASSERT_TRUE(tether::write_saved(*dir, saved).has_value());
  ASSERT_TRUE(tether::update_saved(*dir, [](tether::SavedWorkers& s) {
                s.workers.push_back(saved_spec("web", "shop", "web", {"db"}));
              }).has_value());
  auto now = tether::read_saved(*dir);
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->workers.size(), 2u);
  EXPECT_GT(now->saved_ms, 0);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root / "tether"))
    names.push_back(e.path().filename());
  EXPECT_EQ(names, (std::vector<std::string>{"saved.jsonl"}));
  ASSERT_EQ(::stat((root / "tether/saved.jsonl").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // A spec that JSON cannot carry is refused before anything is written.
  saved.workers[0].name = "bad\xff";
  EXPECT_FALSE(tether::write_saved(*dir, saved).has_value());
  EXPECT_EQ(tether::read_saved(*dir)->workers.size(), 2u);
  std::error_code ec;
  fs::remove_all(root, ec);
}

}  // namespace
