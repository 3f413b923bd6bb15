// parley: the command-line client. Everything lives in src/cli/ so that tests can reach it.
#include "cli/commands.hpp"

int main(int argc, char** argv) { return parley::cli::run(argc, argv); }
