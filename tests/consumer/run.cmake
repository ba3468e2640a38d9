# Installs the build tree into WORK_DIR/prefix and builds the consumer twice.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

# 1. find_package(tether)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/cmake-build -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/cmake-build)
run(${WORK_DIR}/cmake-build/consumer)
message("${last_output}")
run(${WORK_DIR}/cmake-build/consumer_supervise)
message("${last_output}")

# 1b. add_subdirectory(tether), on a machine without CLI11 (find_package of
# it is disabled): the libraries need neither CLI11 nor the command.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/subdir-build -G ${GENERATOR}
    -DTETHER_SOURCE=${TETHER_SOURCE} -DCMAKE_DISABLE_FIND_PACKAGE_CLI11=TRUE)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/subdir-build)
run(${WORK_DIR}/subdir-build/consumer)
message("subdirectory ${last_output}")
run(${WORK_DIR}/subdir-build/consumer_supervise)
message("subdirectory ${last_output}")

# 2. pkg-config
find_program(PKG_CONFIG pkg-config REQUIRED)
set(ENV{PKG_CONFIG_PATH} ${prefix}/lib/pkgconfig)
run(${PKG_CONFIG} --cflags --libs tether)
string(STRIP "${last_output}" flags)
separate_arguments(flags UNIX_COMMAND "${flags}")
run(c++ ${SOURCE_DIR}/main.cpp -o ${WORK_DIR}/consumer-pc ${flags})
run(${WORK_DIR}/consumer-pc)
message("${last_output}")
file(REMOVE_RECURSE ${WORK_DIR})
