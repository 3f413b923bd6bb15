// Test and benchmark support: start a server process and learn its port from the first line
// it prints ("... listening on HOST:PORT ..."), as parleyd and parley-bench-echo do.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace parley::test_support {

struct listening_process {
  pid_t pid = -1;
  unsigned short port = 0;
};

// Spawns argv[0] with `argv`, its stdout on a pipe, and the given environment ("NAME=value"
// entries; empty: the inherited one). Reads the first stdout line; if it does not say where
// the process listens, kills it and throws std::runtime_error with that line.
listening_process spawn_listening(std::vector<std::string> argv, std::vector<std::string> env = {});

}  // namespace parley::test_support
