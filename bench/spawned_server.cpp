#include "spawned_server.hpp"

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <thread>

#include "listening_process.hpp"

namespace parley::bench {

spawned_server::spawned_server(std::vector<std::string> argv) {
  const auto p = test_support::spawn_listening(std::move(argv));
  pid_ = p.pid;
  port_ = p.port;
}

spawned_server::~spawned_server() { stop(); }

void spawned_server::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 500; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

}  // namespace parley::bench
