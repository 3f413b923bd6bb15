// The parley command-line client: argument parsing and the commands, on the client SDK.
#pragma once

namespace parley::cli {

// Runs the CLI; returns the process exit code (0 ok, 1 failure, 2 usage error).
int run(int argc, char** argv);

}  // namespace parley::cli
