// Shell completion for the tether command: `tether completion bash|zsh`
// prints a script made from the command's own parser (every command and
// option registered at run time), and the hidden `tether _complete` gives
// the scripts what only the state directory or a set's file knows: worker
// names and ids, set names, definitions.
//
// What a positional argument completes to is read from its name, so a new
// command gets completion by naming its arguments as the others do:
//   worker            one worker: names and ids
//   workers           several: names, ids, sets' names and `all`
//                     (signal's last word is the signal, so signal also
//                     offers signal names after the first)
//   names / counts    a set's definitions (up, down) / NAME= (scale)
//   command           a program, then its arguments (files)
//   dir, *-dir        a directory; -f/--file and a CLI::ExistingFile check,
//                     a file; a CLI::ExistingDirectory check, a directory
//   a CLI::IsMember check: its words
// Anything else takes a value nothing can guess (a number, a message).
#pragma once

#include <CLI/CLI.hpp>

namespace tether_cli {

// Adds `completion SHELL` and the hidden `_complete` to `app`, and keeps
// `app` (the root: the scripts describe every command it has when the
// script is printed, whenever they were added). After parsing, call
// run_completion(): it returns the exit code, or -1 when neither was given.
void add_completion_command(CLI::App& app);
int run_completion();

}  // namespace tether_cli
