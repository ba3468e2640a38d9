// tether completion bash|zsh, and the hidden tether _complete the scripts
// call for what only the state directory or a set's file knows.
//
// The scripts are written from the parser when they are printed, not kept
// by hand: every command and option registered at run time is in them, and
// what an argument completes to follows from its name and its checks
// (completion.hpp). The build installs what the built program prints
// (tools/completion/generate.cmake), so the installed script describes the
// installed program.
#include "completion.hpp"

#include <cctype>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "tether/supervise.hpp"
#include "tether/tether.hpp"
#include "workers.hpp"

namespace tether_cli {

namespace {

// What a word in an option's value or a positional place completes to.
enum class Kind {
  flag,   // an option without a value
  value,  // a value nothing can guess: a number, a message
  file,
  dir,
  worker,          // one worker: names and ids
  workers,         // several: names, ids, sets' names, all
  signal_workers,  // signal's: workers, then workers or the signal
  definitions,     // a set's definitions (up, down)
  counts,          // NAME= of a set's definitions (scale)
  command,         // a program, then its arguments
  words,           // a CLI::IsMember check's words
};

struct Slot {
  Kind kind = Kind::value;
  std::vector<std::string> words;  // Kind::words
};

struct OptionInfo {
  std::vector<std::string> names;  // "-f", "--file"
  std::string description;
  Slot slot;
  bool repeats = false;  // a vector: given again and again
};

struct PositionalInfo {
  std::string name;
  Slot slot;
  bool repeats = false, required = false;
};

struct CommandInfo {
  std::string name, description;
  std::vector<OptionInfo> options;
  std::vector<PositionalInfo> positionals;
};

struct Model {
  std::vector<OptionInfo> options;  // the root's own (--help, --version)
  std::vector<CommandInfo> commands;
};

CLI::App* root_app = nullptr;
CLI::App *completion_cmd = nullptr, *complete_cmd = nullptr;

struct {
  std::string shell, what, file;
  bool bulk = false, counts = false;
} copt;

// A word either shell can hold unquoted, in a table of the script and in
// `case` patterns: the scripts are made of these and of quoted strings.
bool plain(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (!std::isalnum(u) && std::string_view("._@%+=/-").find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  for (std::size_t at = 0;;) {
    auto next = s.find(sep, at);
    out.emplace_back(s.substr(at, next == std::string_view::npos ? next : next - at));
    if (next == std::string_view::npos) return out;
    at = next + 1;
  }
}

// CLI11 keeps no list of an option's accepted words, but IsMember
// describes itself in the type name, as the help shows it:
// "TEXT:{always,on-failure,never}" (CLI::detail::generate_set). The same
// name carries ExistingDirectory's "DIR" and ExistingFile's "FILE".
Slot slot_of(const std::string& command, const CLI::Option& o) {
  if (o.nonpositional() && o.get_items_expected_max() == 0) return {Kind::flag, {}};
  auto type = o.get_type_name();
  for (const auto& part : split(type, ':')) {
    if (part.size() > 2 && part.front() == '{' && part.back() == '}') {
      auto words = split(std::string_view(part).substr(1, part.size() - 2), ',');
      bool all_plain = true;
      for (const auto& w : words) all_plain = all_plain && plain(w);
      if (all_plain) return {Kind::words, words};
    }
    if (part == "DIR") return {Kind::dir, {}};
    if (part == "FILE" || part == "PATH") return {Kind::file, {}};
  }
  const std::string& name = o.get_single_name();
  if (name == "dir" || name.ends_with("-dir")) return {Kind::dir, {}};
  if (name == "file") return {Kind::file, {}};
  if (o.nonpositional()) return {Kind::value, {}};
  if (name == "worker") return {Kind::worker, {}};
  // `tether signal WORKER… SIGNAL`: one list, the signal last.
  if (name == "workers") return {command == "signal" ? Kind::signal_workers : Kind::workers, {}};
  if (name == "names") return {Kind::definitions, {}};
  if (name == "counts") return {Kind::counts, {}};
  if (name == "command") return {Kind::command, {}};
  return {Kind::value, {}};
}

// Hidden options and commands (group "") are left out, as --help does.
void describe_options(const std::string& command, const CLI::App& app,
                      std::vector<OptionInfo>& options, std::vector<PositionalInfo>* positionals) {
  for (const CLI::Option* o : app.get_options()) {
    if (o->get_group().empty()) continue;
    if (!o->nonpositional()) {
      if (positionals == nullptr || !plain(o->get_single_name())) continue;
      positionals->push_back({o->get_single_name(), slot_of(command, *o),
                              o->get_items_expected_max() > 1, o->get_required()});
      continue;
    }
    OptionInfo info;
    for (const auto& s : o->get_snames()) info.names.push_back("-" + s);
    for (const auto& l : o->get_lnames()) info.names.push_back("--" + l);
    std::erase_if(info.names, [](const std::string& n) { return !plain(n); });
    if (info.names.empty()) continue;
    info.description = o->get_description();
    info.slot = slot_of(command, *o);
    info.repeats = info.slot.kind != Kind::flag && o->get_expected_max() > 1;
    options.push_back(std::move(info));
  }
}

Model describe(CLI::App& app) {
  Model m;
  describe_options("", app, m.options, nullptr);
  // Option groups are subcommands without a name.
  for (CLI::App* sub : app.get_subcommands([](CLI::App* s) {
         return !s->get_name().empty() && !s->get_group().empty() && plain(s->get_name());
       })) {
    CommandInfo c{sub->get_name(), sub->get_description(), {}, {}};
    describe_options(c.name, *sub, c.options, &c.positionals);
    m.commands.push_back(std::move(c));
  }
  return m;
}

void replace(std::string& text, std::string_view marker, std::string_view with) {
  auto at = text.find(marker);
  if (at != std::string::npos) text.replace(at, marker.size(), with);
}

std::string single_quoted(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// ---------------------------------------------------------------- bash

std::string bash_kind(const Slot& s) {
  switch (s.kind) {
    case Kind::flag:
      return "flag";
    case Kind::value:
      return "value";
    case Kind::file:
      return "file";
    case Kind::dir:
      return "dir";
    case Kind::worker:
      return "worker";
    case Kind::workers:
      return "workers";
    case Kind::signal_workers:
      return "signal-workers";
    case Kind::definitions:
      return "definitions";
    case Kind::counts:
      return "counts";
    case Kind::command:
      return "command";
    case Kind::words:
      return fmt::format("words:{}", fmt::join(s.words, ","));
  }
  return "value";
}

// The script's fixed part; @TABLES@ becomes the functions that hold the
// commands, their options and their positionals.
//
// Why it is written this way:
// - Candidates are matched against the word by bash's own [[ == ]], never
//   through `compgen -W`: compgen expands its word list, and a worker's
//   name is anyone's text (`$(…)` in a name would run on TAB).
// - No global variables: bash-completion sources this file from inside a
//   function, where `declare` would make them local and lose them.
// - COMP_WORDBREAKS splits `--name=web` into `--name`, `=`, `web`.
// - The program asked for workers is the one being completed (COMP_WORDS[0],
//   `tether` for the installed script, or ./build/tether), not a path
//   fixed when the script was made: an installed script must outlive the
//   build directory.
constexpr std::string_view kBash =
    R"BASH(# bash completion for tether @VERSION@: commands, options, and the
# workers of the state directory (names, ids, sets).
#
# Generated by `tether completion bash` from the command's parser: do not
# edit, regenerate. Installed as
# $prefix/share/bash-completion/completions/tether (bash-completion loads it
# the first time `tether` is completed); for the current shell only:
#   source <(tether completion bash)
# Worker names and a set's definitions come from `tether _complete` (the
# tether being completed); every other word from the tables below.

# _tether_add WORD…: those of the words (each cut at a tab: what follows is
# a description) that begin with the word being completed, into COMPREPLY,
# quoted when they hold characters the shell would interpret.
_tether_add() {
  local w
  for w; do
    w=${w%%$'\t'*}
    [[ -n $w && $w == "$cur"* ]] || continue
    [[ $w == *[!A-Za-z0-9._@%+=:,/-]* ]] && printf -v w %q "$w"
    COMPREPLY+=("$w")
  done
}

# _tether_ask ARG…: what `tether _complete ARG…` offers; nothing when it
# fails (no state directory, no set file, an older tether).
_tether_ask() {
  local -a lines
  mapfile -t lines < <("$prog" _complete "$@" 2>/dev/null)
  _tether_add "${lines[@]}"
}

# _tether_values KIND: the candidates for a word of that kind.
_tether_values() {
  local -a found fileopt=()
  [[ -n $file ]] && fileopt=(--file "$file")
  case $1 in
    file | dir)
      compopt -o filenames 2>/dev/null
      [[ $1 == dir ]] && mapfile -t found < <(compgen -d -- "$cur")
      [[ $1 == file ]] && mapfile -t found < <(compgen -f -- "$cur")
      COMPREPLY+=("${found[@]}") ;;
    command)
      mapfile -t found < <(compgen -c -- "$cur")
      COMPREPLY+=("${found[@]}") ;;
    worker) _tether_ask workers ;;
    workers) _tether_ask workers --bulk ;;
    signal)
      # compgen -A signal lists the trap's pseudo-signals too.
      mapfile -t found < <(compgen -A signal | grep -Exv 'EXIT|DEBUG|ERR|RETURN')
      [[ $cur == SIG* ]] || found=("${found[@]#SIG}")
      _tether_add "${found[@]}" ;;
    definitions) _tether_ask definitions "${fileopt[@]}" ;;
    counts)
      compopt -o nospace 2>/dev/null
      _tether_ask definitions --counts "${fileopt[@]}" ;;
    words:*)
      local IFS=,
      # shellcheck disable=SC2086 # the words are plain: split on commas only
      _tether_add ${1#words:} ;;
  esac
}

@TABLES@
# _tether_words: COMP_WORDS with the words bash split at a colon glued
# back, into words and cword. bash breaks words at COMP_WORDBREAKS, where
# ':' is, so a worker named web:1 arrives as web, :, 1; COMP_LINE says
# which of them had no blank between them.
_tether_words() {
  local line=$COMP_LINE rest w i
  words=() cword=0
  for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
    w=${COMP_WORDS[i]}
    rest=${line#"${line%%[![:space:]]*}"}
    if ((i > 0)) && [[ $rest == "$line" && ($w == :* || ${words[${#words[@]} - 1]} == *:) ]]; then
      words[${#words[@]} - 1]+=$w
    else
      words+=("$w")
    fi
    line=${rest#"$w"}
    ((i == COMP_CWORD)) && cword=$((${#words[@]} - 1))
  done
}

# _tether_complete: COMPREPLY for words[cword].
_tether_complete() {
  local cmd='' file='' word kind i j n=0 at dashdash=''
  local -a kinds

  # The command: the first word that is not an option (or an option's value).
  for ((i = 1; i < cword; i++)); do
    word=${words[i]}
    if [[ $word == -* ]]; then
      _tether_kind '' "$word"
      [[ -n $kind && $kind != flag ]] && ((i++))
      continue
    fi
    cmd=$word
    break
  done
  if [[ -z $cmd ]]; then
    if [[ $cur == -* ]]; then _tether_options ''; else _tether_commands; fi
    return
  fi

  # Its words so far: options and their values, and n positionals.
  for ((i++; i < cword; i++)); do
    word=${words[i]}
    if [[ -n $dashdash || $word != -?* ]]; then
      ((n++))
      continue
    fi
    if [[ $word == -- ]]; then
      dashdash=1
      continue
    fi
    [[ $word == *=* ]] && continue  # --name=web, when = does not break words
    _tether_kind "$cmd" "$word"
    [[ -z $kind || $kind == flag ]] && continue
    j=$((i + 1))
    [[ ${words[j]} == = ]] && ((j++))  # --name=web, as bash splits it
    if ((j >= cword)); then  # the word being completed is this option's value
      [[ $cur == = ]] && cur=''
      _tether_values "$kind"
      return
    fi
    [[ $word == -f || $word == --file ]] && file=${words[j]}
    i=$j
  done
  if [[ -z $dashdash && $cur == -* ]]; then
    _tether_options "$cmd"
    return
  fi

  # The positional it is: the n-th, or the last one again when it repeats.
  _tether_positionals "$cmd"
  ((${#kinds[@]})) || return
  at=$n
  if ((at >= ${#kinds[@]})); then
    at=$((${#kinds[@]} - 1))
    [[ ${kinds[at]} == *+ ]] || return
  fi
  kind=${kinds[at]%+}
  case $kind in
    command) ((n > at)) && kind='file' ;;  # the program's own arguments
    signal-workers)
      kind='workers'
      ((n > at)) && _tether_values signal ;;
  esac
  _tether_values "$kind"
}

_tether() {
  local cur prog=${COMP_WORDS[0]} cword i colon
  local -a words
  [[ $prog == \~/* ]] && prog=$HOME/${prog#\~/}
  _tether_words
  cur=${words[cword]}
  COMPREPLY=()
  _tether_complete
  # bash replaces only what follows the word's last colon.
  if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
    colon=${cur%"${cur##*:}"}
    for i in "${!COMPREPLY[@]}"; do COMPREPLY[i]=${COMPREPLY[i]#"$colon"}; done
  fi
  return 0
}

complete -F _tether tether
)BASH";

std::string bash_script(const Model& m) {
  std::string tables;
  auto names_of = [](const std::vector<OptionInfo>& options) {
    std::vector<std::string> names;
    for (const auto& o : options) names.insert(names.end(), o.names.begin(), o.names.end());
    return fmt::format("{}", fmt::join(names, " "));
  };

  tables += "# The commands.\n_tether_commands() {\n  _tether_add";
  for (const auto& c : m.commands) tables += " " + c.name;
  tables += "\n}\n\n";

  tables += "# _tether_options COMMAND: its options (the root's for '').\n";
  tables += "_tether_options() {\n  case $1 in\n";
  tables += fmt::format("    '') _tether_add {} ;;\n", names_of(m.options));
  for (const auto& c : m.commands) {
    tables += fmt::format("    {}) _tether_add {} ;;\n", c.name, names_of(c.options));
  }
  tables += "  esac\n}\n\n";

  tables += "# _tether_kind COMMAND OPTION: the kind of value the option takes, into\n";
  tables += "# kind (empty for a flag or an unknown option).\n";
  tables += "_tether_kind() {\n  case \"$1 $2\" in\n";
  auto kinds_of = [&](const std::string& command, const std::vector<OptionInfo>& options) {
    for (const auto& o : options) {
      if (o.slot.kind == Kind::flag) continue;
      std::string patterns;
      for (const auto& n : o.names) {
        if (!patterns.empty()) patterns += " | ";
        patterns += single_quoted(fmt::format("{} {}", command, n));
      }
      tables += fmt::format("    {}) kind={} ;;\n", patterns, single_quoted(bash_kind(o.slot)));
    }
  };
  kinds_of("", m.options);
  for (const auto& c : m.commands) kinds_of(c.name, c.options);
  tables += "    *) kind= ;;\n  esac\n}\n\n";

  tables += "# _tether_positionals COMMAND: the kind of each of its positionals, into\n";
  tables += "# kinds; the last ends with + when it repeats.\n";
  tables += "_tether_positionals() {\n  case $1 in\n";
  for (const auto& c : m.commands) {
    if (c.positionals.empty()) continue;
    std::string kinds;
    for (const auto& p : c.positionals) {
      if (!kinds.empty()) kinds += ' ';
      kinds += single_quoted(bash_kind(p.slot) + (p.repeats ? "+" : ""));
    }
    tables += fmt::format("    {}) kinds=({}) ;;\n", c.name, kinds);
  }
  tables += "    *) kinds=() ;;\n  esac\n}\n";

  std::string script(kBash);
  replace(script, "@VERSION@", TETHER_VERSION_STRING);
  replace(script, "@TABLES@", tables);
  return script;
}

// ---------------------------------------------------------------- zsh

// An _arguments explanation: inside [ ], brackets and backslashes escaped.
std::string zsh_bracket(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// _describe's NAME:DESCRIPTION: a colon in the name escaped.
std::string zsh_item(std::string_view name, std::string_view description) {
  std::string out;
  for (char c : name) {
    if (c == ':' || c == '\\') out += '\\';
    out += c;
  }
  return out + ":" + std::string(description);
}

std::string zsh_action(const Slot& s) {
  switch (s.kind) {
    case Kind::flag:
    case Kind::value:
      return " ";  // a message, no candidates
    case Kind::file:
      return "_files";
    case Kind::dir:
      return "_files -/";
    case Kind::worker:
      return "_tether_workers";
    case Kind::workers:
    case Kind::signal_workers:
      return "_tether_targets";
    case Kind::definitions:
      return "_tether_definitions";
    case Kind::counts:
      return "_tether_counts";
    case Kind::command:
      return " _command_names -e";
    case Kind::words:
      return fmt::format("({})", fmt::join(s.words, " "));
  }
  return " ";
}

// One spec per name: `(-f --file)-f+[…]:file:_files` and its --file=.
// The root's flags (--help, --version) end the command line.
std::vector<std::string> zsh_option_specs(const OptionInfo& o, bool root) {
  std::vector<std::string> specs;
  std::string exclusive;
  if (root) {
    exclusive = "(- *)";
  } else if (o.repeats) {
    exclusive = "*";
  } else if (o.names.size() > 1) {
    exclusive = fmt::format("({})", fmt::join(o.names, " "));
  }
  bool takes_value = o.slot.kind != Kind::flag;
  for (const auto& n : o.names) {
    std::string spec = exclusive + n;
    // CLI11 takes --name=web and --name web, -n5 and -n 5.
    if (takes_value) spec += n.starts_with("--") ? "=" : "+";
    spec += "[" + zsh_bracket(o.description) + "]";
    if (takes_value) {
      std::string message = o.names.back();
      message.erase(0, message.find_first_not_of('-'));
      spec += ":" + message + ":" + zsh_action(o.slot);
    }
    specs.push_back(single_quoted(spec));
  }
  return specs;
}

std::vector<std::string> zsh_positional_specs(const std::vector<PositionalInfo>& ps) {
  std::vector<std::string> specs;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const auto& p = ps[i];
    auto n = std::to_string(i + 1);
    std::string colon = p.required ? ":" : "::";
    if (!p.repeats) {
      specs.push_back(single_quoted(n + colon + p.name + ":" + zsh_action(p.slot)));
      continue;
    }
    if (p.slot.kind == Kind::command) {
      // As zsh's own _nice: the program, then _normal completes its
      // arguments as that program's (words shifted to start at it).
      specs.push_back(single_quoted(n + colon + "command:" + zsh_action(p.slot)));
      specs.push_back(single_quoted(i == 0 ? "*::argument: _normal" : "*:argument:_files"));
    } else if (p.slot.kind == Kind::signal_workers) {
      specs.push_back(single_quoted(n + colon + "worker:" + zsh_action(p.slot)));
      specs.push_back(single_quoted("*:worker or signal:_tether_workers_or_signals"));
    } else {
      specs.push_back(single_quoted("*:" + p.name + ":" + zsh_action(p.slot)));
    }
    break;  // a repeating positional takes the rest
  }
  return specs;
}

// The fixed part; @COMMANDS@, @ROOT@ and @CASES@ are made from the parser.
// The file is both an autoloaded function (#compdef, from $fpath: its body
// runs as _tether the first time, defines the functions, then completes)
// and a script to source (it registers itself with compdef), as kubectl's
// and gh's are.
constexpr std::string_view kZsh = R"ZSH(#compdef tether
# zsh completion for tether @VERSION@: commands, options, and the workers
# of the state directory (names, ids, sets).
#
# Generated by `tether completion zsh` from the command's parser: do not
# edit, regenerate. Installed as $prefix/share/zsh/vendor-completions/_tether
# (in Debian's $fpath; elsewhere copy it into a directory of $fpath before
# compinit runs); for the current shell only, after compinit:
#   source <(tether completion zsh)
# Worker names and a set's definitions come from `tether _complete` (the
# tether being completed, never a path fixed when this was made).

# _tether_ask TAG ARG…: what `tether _complete ARG…` offers, described;
# compadd options for _describe after --.
_tether_ask() {
  local tag=$1 line
  shift
  local -a args=() opts=() cands=()
  while (( $# )) && [[ $1 != -- ]]; do args+=("$1"); shift; done
  [[ $1 == -- ]] && shift
  opts=("$@")
  for line in ${(f)"$("$_tether_prog" _complete "${args[@]}" 2>/dev/null)"}; do
    if [[ $line == *$'\t'* ]]; then
      cands+=("${${line%%$'\t'*}//(#m)[:\\]/\\$MATCH}:${line#*$'\t'}")
    else
      cands+=("${line//(#m)[:\\]/\\$MATCH}")
    fi
  done
  _describe -t $tag $tag cands "${opts[@]}"
}

# The actions below get _arguments' compadd options as arguments, and
# leave them: _describe makes its own.

# One worker: names and ids.
(( $+functions[_tether_workers] )) ||
_tether_workers() {
  _tether_ask workers workers
}

# Several: names, ids, sets' names and all.
(( $+functions[_tether_targets] )) ||
_tether_targets() {
  _tether_ask workers workers --bulk
}

# The definitions of the set's file (-f FILE on the line, else ./tether.toml
# or ./Procfile); for scale, NAME= (_tether_counts).
(( $+functions[_tether_definitions] )) ||
_tether_definitions() {
  local file=${opt_args[-f]:-${opt_args[--file]}}
  local -a args=(definitions)
  [[ -n $file ]] && args+=(--file "${(Q)file/#\~/$HOME}")
  _tether_ask definitions "${args[@]}" -- $_tether_suffix  # unquoted: none when unset
}

(( $+functions[_tether_counts] )) ||
_tether_counts() {
  local -a _tether_suffix=(-S =)
  _tether_definitions
}

# signal WORKER… SIGNAL: after the first word, a worker or the signal.
(( $+functions[_tether_workers_or_signals] )) ||
_tether_workers_or_signals() {
  local -a sigs=(${signals:#(EXIT|ZERR|ERR|DEBUG)})
  _alternative 'workers:worker:_tether_targets' "signals:signal:(${sigs[*]})"
}

(( $+functions[_tether_commands] )) ||
_tether_commands() {
  local -a commands=(
@COMMANDS@
  )
  _describe -t commands 'tether command' commands
}

_tether() {
  local curcontext=$curcontext state state_descr line ret=1
  local -A opt_args
  local _tether_prog=${words[1]/#\~/$HOME}
  _arguments -C : \
@ROOT@    '1:command:->command' \
    '*::argument:->argument' && ret=0
  case $state in
    (command) _tether_commands && ret=0 ;;
    (argument)
      curcontext=${curcontext%:*:*}:tether-$words[1]:
      case $words[1] in
@CASES@
      esac
      ;;
  esac
  return ret
}

if [[ $funcstack[1] == _tether ]]; then
  _tether "$@"
else
  compdef _tether tether
fi
)ZSH";

std::string zsh_script(const Model& m) {
  std::string commands, root_specs, cases;
  for (const auto& c : m.commands) {
    commands += "    " + single_quoted(zsh_item(c.name, c.description)) + "\n";
  }
  for (const auto& o : m.options) {
    for (const auto& spec : zsh_option_specs(o, true)) root_specs += "    " + spec + " \\\n";
  }
  for (const auto& c : m.commands) {
    std::vector<std::string> specs;
    for (const auto& o : c.options) {
      auto s = zsh_option_specs(o, false);
      specs.insert(specs.end(), s.begin(), s.end());
    }
    auto p = zsh_positional_specs(c.positionals);
    specs.insert(specs.end(), p.begin(), p.end());
    if (specs.empty()) continue;
    // -S: nothing after -- is an option (tether open … -- sleep 10).
    cases += fmt::format("        ({})\n          _arguments -S : \\\n", c.name);
    for (const auto& s : specs) cases += "            " + s + " \\\n";
    cases += "            && ret=0\n          ;;\n";
  }
  if (!commands.empty()) commands.pop_back();
  if (!cases.empty()) cases.pop_back();

  std::string script(kZsh);
  replace(script, "@VERSION@", TETHER_VERSION_STRING);
  replace(script, "@COMMANDS@", commands);
  replace(script, "@ROOT@", root_specs);
  replace(script, "@CASES@", cases);
  return script;
}

// ---------------------------------------------------------------- _complete

// A candidate goes to the script one per line, a tab before its
// description: a name with a control character (a newline, a tab, an
// escape sequence for the terminal) is not offered.
bool offerable(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return false;
  }
  return true;
}

// A description on one line, at most about `max` bytes, cut between
// characters (never inside a UTF-8 sequence).
std::string one_line(std::string_view s, std::size_t max = 60) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? ' ' : c;
  }
  if (out.size() > max) {
    std::size_t cut = max;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xc0) == 0x80) --cut;
    out.resize(cut);
    out += "…";
  }
  return out;
}

// Names, then ids; with --bulk, sets' names and `all` too. Nothing and
// exit 0 when there is no state directory: a TAB must never print an error.
int complete_workers() {
  auto dir = tether::StateDir::open_default(false);
  if (!dir) return 0;
  auto all = tether::list_workers(*dir);
  if (!all) return 0;
  std::map<std::string, std::vector<const tether::WorkerInfo*>> names;
  std::map<std::string, int> sets;
  for (const auto& w : all->workers) {
    if (!w.name.empty()) names[w.name].push_back(&w);
    if (!w.set.empty()) ++sets[w.set];
  }
  std::string out;
  for (const auto& [name, ws] : names) {
    if (!offerable(name)) continue;
    if (ws.size() == 1) {
      out +=
          fmt::format("{}\t{}, {}\n", name, ws.front()->id, tether::to_string(ws.front()->state));
    } else {
      out += fmt::format("{}\t{} workers\n", name, ws.size());
    }
  }
  for (const auto& w : all->workers) {
    if (!offerable(w.id)) continue;
    if (w.name.empty()) {
      out += fmt::format("{}\t{}\n", w.id, tether::to_string(w.state));
    } else {
      out += fmt::format("{}\t{}, {}\n", w.id, one_line(w.name), tether::to_string(w.state));
    }
  }
  if (copt.bulk) {
    for (const auto& [set, n] : sets) {
      if (offerable(set)) out += fmt::format("{}\tset, {} worker{}\n", set, n, n == 1 ? "" : "s");
    }
    if (!all->workers.empty()) out += "all\tevery worker\n";
  }
  fmt::print("{}", out);
  return 0;
}

// The definitions of the set's file (-f, else ./tether.toml or
// ./Procfile); NAME= with --counts, for scale. Nothing when it is bad.
int complete_definitions() {
  auto set = load_set(copt.file);
  if (!set) return 0;
  std::string out;
  for (const auto& d : set->workers) {
    if (!offerable(d.name)) continue;
    std::string command;
    for (const auto& a : d.command) command += (command.empty() ? "" : " ") + a;
    out += fmt::format("{}{}\t{}\n", d.name, copt.counts ? "=" : "", one_line(command));
  }
  fmt::print("{}", out);
  return 0;
}

}  // namespace

void add_completion_command(CLI::App& app) {
  root_app = &app;
  completion_cmd =
      app.add_subcommand("completion", "Print the shell completion script: bash or zsh");
  completion_cmd->add_option("shell", copt.shell, "bash or zsh")
      ->required()
      ->check(CLI::IsMember({"bash", "zsh"}));

  complete_cmd = app.add_subcommand("_complete", "")->group("");  // hidden: the scripts' own
  complete_cmd->add_option("what", copt.what)
      ->required()
      ->check(CLI::IsMember({"workers", "definitions"}));
  complete_cmd->add_flag("--bulk", copt.bulk);
  complete_cmd->add_flag("--counts", copt.counts);
  complete_cmd->add_option("-f,--file", copt.file);
}

int run_completion() {
  if (completion_cmd != nullptr && *completion_cmd) {
    auto model = describe(*root_app);
    fmt::print("{}", copt.shell == "zsh" ? zsh_script(model) : bash_script(model));
    return 0;
  }
  if (complete_cmd != nullptr && *complete_cmd) {
    return copt.what == "workers" ? complete_workers() : complete_definitions();
  }
  return -1;
}

}  // namespace tether_cli
