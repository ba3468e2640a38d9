# Writes the shell completion scripts the build installs, by running the
# built tether: cmake -DTETHER=… -DOUT_DIR=… [-DEMULATOR=…] -P generate.cmake
#
# Made by the program at build time rather than checked in: the scripts
# are tables of the program's commands and options, read from its parser
# (tools/tether/completion.cpp), so a checked-in copy would be stale with
# every option added, and the installed script always describes the
# installed program. A cross build runs the program through
# CMAKE_CROSSCOMPILING_EMULATOR, or installs no scripts (CMakeLists.txt).
#
# LeakSanitizer stops the process with ptrace at exit, which containers
# and CI sandboxes often forbid, and then fails the run: an ASan build
# must not fail to build for that, and leaks are the tests' business.
set(ENV{ASAN_OPTIONS} "$ENV{ASAN_OPTIONS}:detect_leaks=0")
file(MAKE_DIRECTORY ${OUT_DIR})
foreach(shell bash zsh)
  if(shell STREQUAL "bash")
    set(out ${OUT_DIR}/tether)
  else()
    set(out ${OUT_DIR}/_tether)
  endif()
  # Written beside, then renamed: an interrupted build leaves no half script.
  execute_process(COMMAND ${EMULATOR} ${TETHER} completion ${shell}
    OUTPUT_FILE ${out}.tmp RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    file(REMOVE ${out}.tmp)
    message(FATAL_ERROR "${TETHER} completion ${shell} failed (${rc}): ${err}")
  endif()
  file(RENAME ${out}.tmp ${out})
endforeach()
