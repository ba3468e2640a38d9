// Shell completion (tools/tether/completion.cpp), as a shell runs it: the
// script `tether completion bash|zsh` prints, loaded into a real bash (and
// zsh, where it is installed), with `tether` found on PATH as an installed
// script finds it. Every case has its own state and configuration
// directories, exits every worker it opened, and leaves nothing behind.
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_support.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

using Outcome = tether_test::CliResult;
using tether_test::on_path;

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// A bash word that stays one word, whatever it holds.
std::string bash_quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class Completion : public tether_test::CliCase {
 protected:
  // Every command gets the case's own directories, and a PATH on which
  // `tether` is the one just built.
  Outcome run(tether::Command c) {
    with_dirs(c).env("PATH",
                     fs::path(TETHER_CLI).parent_path().string() + ":" +
                         (std::getenv("PATH") != nullptr ? std::getenv("PATH") : "/usr/bin:/bin"));
    return outcome(c, 60s);
  }

  Outcome tether(const std::string& sub, const std::vector<std::string>& args = {}) {
    return run(tether::Command(TETHER_CLI).arg(sub).args(args));
  }

  // Opens a worker running `sleep 1000`; returns its id.
  std::string open(const std::string& name) {
    auto r = tether("open", {"--json", "--name", name, "--", "sleep", "1000"});
    if (r.code != 0) throw std::runtime_error("open failed: " + r.err);
    return json::parse(r.out)["id"].get<std::string>();
  }

  void exit_worker(const std::string& key) {
    auto r = tether("exit", {key});
    EXPECT_EQ(r.code, 0) << r.err;
  }

  // What bash offers for the last of `words` (as bash splits the line:
  // `line` when that is not the words joined by blanks).
  std::vector<std::string> bash_complete(const std::vector<std::string>& words,
                                         std::string line = "") {
    std::string array;
    for (const auto& w : words) array += bash_quoted(w) + " ";
    if (line.empty()) {
      for (std::size_t i = 0; i < words.size(); ++i) line += (i ? " " : "") + words[i];
    }
    auto script = fmt::format(
        "source <(tether completion bash) || exit 1\n"
        "COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE={}; COMP_POINT=${{#COMP_LINE}}\n"
        "_tether || exit 1\n"
        "printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        array, words.size() - 1, bash_quoted(line));
    auto r = run(tether::Command("bash").args({"-c", script}));
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    auto out = lines(r.out);
    std::erase(out, "");
    return out;
  }
};

std::string name(const char* stem) {
  return tether_test::unique_name(stem);
}

std::string dump(const std::vector<std::string>& v) {
  return fmt::format("[{}]", fmt::join(v, ", "));
}

}  // namespace

TEST_F(Completion, BashListsWorkerNamesIdsAndAll) {
  auto a = name("alpha"), b = name("beta");
  auto ida = open(a), idb = open(b);
  auto got = bash_complete({"tether", "exit", ""});
  EXPECT_TRUE(has(got, a)) << dump(got);
  EXPECT_TRUE(has(got, b)) << dump(got);
  EXPECT_TRUE(has(got, ida)) << dump(got);
  EXPECT_TRUE(has(got, idb)) << dump(got);
  EXPECT_TRUE(has(got, "all")) << dump(got);
  // A prefix keeps only what it begins.
  auto only_a = bash_complete({"tether", "stop", a.substr(0, a.size() - 1)});
  EXPECT_TRUE(has(only_a, a)) << dump(only_a);
  EXPECT_FALSE(has(only_a, b)) << dump(only_a);
  exit_worker(a);
  exit_worker(b);
  auto none = bash_complete({"tether", "exit", ""});
  EXPECT_FALSE(has(none, a)) << dump(none);
  EXPECT_FALSE(has(none, "all")) << dump(none);
}

// status takes one worker: no `all`, and no second one after the first.
TEST_F(Completion, BashOffersOneWorkerWhereOneIsTaken) {
  auto a = name("alpha");
  auto id = open(a);
  auto got = bash_complete({"tether", "status", ""});
  EXPECT_TRUE(has(got, a)) << dump(got);
  EXPECT_TRUE(has(got, id)) << dump(got);
  EXPECT_FALSE(has(got, "all")) << dump(got);
  auto second = bash_complete({"tether", "status", a, ""});
  EXPECT_TRUE(second.empty()) << dump(second);
  exit_worker(id);
}

// Worker names may hold a colon, where bash breaks words (COMP_WORDBREAKS):
// `web:1` reaches the function as web, :, 1, and bash replaces only what
// follows the colon.
TEST_F(Completion, BashCompletesANameWithAColon) {
  auto stem = name("web");
  auto id = open(stem + ":1");
  auto got = bash_complete({"tether", "exit", stem, ":"}, "tether exit " + stem + ":");
  EXPECT_EQ(got, std::vector<std::string>{"1"}) << dump(got);
  exit_worker(id);
}

TEST_F(Completion, BashCompletesCommands) {
  EXPECT_EQ(bash_complete({"tether", "e"}), (std::vector<std::string>{"exit", "export"}));
  auto all = bash_complete({"tether", ""});
  for (const char* c : {"run", "open", "list", "status", "logs", "up", "completion"}) {
    EXPECT_TRUE(has(all, c)) << c << " in " << dump(all);
  }
  EXPECT_FALSE(has(all, "_complete")) << dump(all);  // hidden ones stay hidden
}

TEST_F(Completion, BashCompletesOptions) {
  EXPECT_EQ(bash_complete({"tether", "open", "--na"}), std::vector<std::string>{"--name"});
  // After an option's value, the options again.
  EXPECT_EQ(bash_complete({"tether", "open", "--name", "x", "--na"}),
            std::vector<std::string>{"--name"});
  // An IsMember check's words, with the value apart or after =.
  EXPECT_EQ(bash_complete({"tether", "open", "--restart", ""}),
            (std::vector<std::string>{"always", "on-failure", "never"}));
  EXPECT_EQ(bash_complete({"tether", "open", "--restart", "=", "o"}, "tether open --restart=o"),
            std::vector<std::string>{"on-failure"});
  EXPECT_EQ(bash_complete({"tether", "completion", ""}), (std::vector<std::string>{"bash", "zsh"}));
}

TEST_F(Completion, BashCompletesSignalsAfterTheWorkers) {
  auto first = bash_complete({"tether", "signal", "TER"});
  EXPECT_FALSE(has(first, "TERM")) << dump(first);  // the first word is a worker
  auto then = bash_complete({"tether", "signal", "web", "TER"});
  EXPECT_TRUE(has(then, "TERM")) << dump(then);
  auto sig = bash_complete({"tether", "signal", "web", "SIGTER"});
  EXPECT_TRUE(has(sig, "SIGTERM")) << dump(sig);
}

TEST_F(Completion, BashCompletesTheDefinitionsOfASetFile) {
  auto file = config_ / "set.toml";
  std::ofstream(file) << "name = \"shop\"\n"
                         "[db]\ncommand = [\"/bin/sleep\", \"100\"]\n"
                         "[web]\ncommand = \"exec sleep 100\"\n";
  auto up = bash_complete({"tether", "up", "-f", file.string(), ""});
  EXPECT_EQ(up, (std::vector<std::string>{"db", "web"}));
  auto scale = bash_complete({"tether", "scale", "--file", file.string(), "w"});
  EXPECT_EQ(scale, std::vector<std::string>{"web="});
  // -f's own value is a file.
  auto f = bash_complete({"tether", "up", "-f", (config_ / "se").string()});
  EXPECT_EQ(f, std::vector<std::string>{file.string()});
}

TEST_F(Completion, BashRunCompletesAProgramThenItsArguments) {
  auto program = bash_complete({"tether", "run", "--", "slee"});
  EXPECT_TRUE(has(program, "sleep")) << dump(program);
  std::ofstream(config_ / "argument.txt") << "";
  auto arg = bash_complete({"tether", "run", "--", "cat", (config_ / "argu").string()});
  EXPECT_EQ(arg, std::vector<std::string>{(config_ / "argument.txt").string()});
}

TEST_F(Completion, UnknownShellExitsTwo) {
  auto r = tether("completion", {"fish"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("fish"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST_F(Completion, BashScriptParses) {
  auto r = run(tether::Command("bash").args(
      {"-c", "set -o pipefail; tether completion bash | bash -n", "bash"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
}

TEST_F(Completion, BashScriptPassesShellcheck) {
  if (!on_path("shellcheck")) GTEST_SKIP() << "shellcheck is not installed";
  auto r = run(tether::Command("bash").args(
      {"-c", "set -o pipefail; tether completion bash | shellcheck -s bash -", "bash"}));
  EXPECT_EQ(r.code, 0) << r.out << r.err;
}

// An installed script outlives the build directory: it runs the tether it
// completes, never a path fixed when it was made.
TEST_F(Completion, ScriptsNameNoBuildPath) {
  for (const char* shell : {"bash", "zsh"}) {
    auto r = tether("completion", {shell});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.find(fs::path(TETHER_CLI).parent_path().string()), std::string::npos) << shell;
    EXPECT_NE(r.out.find("_complete"), std::string::npos) << shell;
  }
}

// A TAB must never print an error: no state directory, no workers, no set
// file all give nothing, and exit 0.
TEST_F(Completion, NothingToOfferIsNotAnError) {
  auto r = run(tether::Command(TETHER_CLI)
                   .args({"_complete", "workers", "--bulk"})
                   .env("TETHER_DIR", (dir_ / "missing").string()));
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "");
  auto empty = tether("_complete", {"workers", "--bulk"});
  EXPECT_EQ(empty.code, 0);
  EXPECT_EQ(empty.out, "");  // `all` only when there is a worker
  auto defs = tether("_complete", {"definitions", "-f", (config_ / "none.toml").string()});
  EXPECT_EQ(defs.code, 0);
  EXPECT_EQ(defs.out, "");
  EXPECT_EQ(defs.err, "");
}

// zsh through its line editor, in a pseudo-terminal (zsh/zpty): TAB, then
// read until every expected word has been listed (or 20 s have passed:
// zsh lists only once no more keys are waiting, so nothing may follow the
// TAB). The script is loaded from $fpath, as the installed _tether is.
TEST_F(Completion, ZshListsWorkerNames) {
  if (!on_path("zsh")) GTEST_SKIP() << "zsh is not installed";
  auto a = name("alpha"), b = name("beta");
  auto ida = open(a), idb = open(b);
  auto script = tether("completion", {"zsh"});
  ASSERT_EQ(script.code, 0) << script.err;
  fs::create_directory(config_ / "fpath");
  std::ofstream(config_ / "fpath" / "_tether") << script.out;

  std::string zsh = R"ZSH(
zmodload zsh/zpty || exit 1
fpath_dir=$1; shift
zpty z zsh -f -i
zpty -w z "PS1='%% '; fpath=(${(q)fpath_dir} \$fpath); autoload -Uz compinit; compinit -u -D; LISTMAX=10000"
zpty -w -n z "tether exit "$'\t'
out=
for i in {1..400}; do
  while zpty -r -t z chunk; do out+=$chunk; done
  missing=0
  for word; do [[ $out == *$word* ]] || missing=1; done
  (( missing )) || break
  sleep 0.05
done
zpty -w z $'\x15'exit  # ^U: the line killed
zpty -d z
print -r -- "$out"
)ZSH";
  auto r = run(tether::Command("zsh").args(
      {"-f", "-c", zsh, "zsh", (config_ / "fpath").string(), a, b, ida, "every worker"}));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find(a), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(b), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(ida), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(idb), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("every worker"), std::string::npos) << r.out;  // all, described
  exit_worker(a);
  exit_worker(b);
}

TEST_F(Completion, ZshScriptParses) {
  if (!on_path("zsh")) GTEST_SKIP() << "zsh is not installed";
  auto r = run(tether::Command("zsh").args(
      {"-f", "-c",
       "autoload -Uz compinit; compinit -u -D; source <(tether completion zsh) && "
       "print -r -- $_comps[tether]"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out, "_tether\n");  // sourced, it registered itself
  auto n = run(tether::Command("zsh").args(
      {"-f", "-c", "set -o pipefail; tether completion zsh | zsh -n", "zsh"}));
  EXPECT_EQ(n.code, 0) << n.err;
}
