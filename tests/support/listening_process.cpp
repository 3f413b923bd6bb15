#include "listening_process.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>

extern char** environ;

namespace parley::test_support {

listening_process spawn_listening(std::vector<std::string> argv_s, std::vector<std::string> env) {
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  int out[2];
  if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  posix_spawn_file_actions_addclose(&actions, out[1]);
  listening_process p;
  const int rc = posix_spawn(&p.pid, argv[0], &actions, nullptr, argv.data(),
                             env.empty() ? environ : envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    throw std::runtime_error("cannot start " + argv_s[0]);
  }
  std::string line;
  char c;
  while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
  ::close(out[0]);
  const auto at = line.find("listening on ");
  const auto colon = at == std::string::npos ? std::string::npos : line.find(':', at);
  if (colon == std::string::npos) {
    ::kill(p.pid, SIGKILL);
    ::waitpid(p.pid, nullptr, 0);
    throw std::runtime_error(argv_s[0] + " did not start: '" + line + "'");
  }
  p.port = static_cast<unsigned short>(std::stoul(line.substr(colon + 1)));
  return p;
}

}  // namespace parley::test_support
