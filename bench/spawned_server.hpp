// A server process started by parley-bench (parleyd or parley-bench-echo), so that the bench
// can sample its CPU and memory and stop it afterwards.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace parley::bench {

class spawned_server {
 public:
  // Runs `argv`; waits for its first stdout line to contain "listening on HOST:PORT".
  explicit spawned_server(std::vector<std::string> argv);
  ~spawned_server();
  spawned_server(const spawned_server&) = delete;
  spawned_server& operator=(const spawned_server&) = delete;

  pid_t pid() const { return pid_; }
  unsigned short port() const { return port_; }
  std::string url() const { return "ws://127.0.0.1:" + std::to_string(port_) + "/v2/ws"; }
  void stop();  // SIGTERM, then SIGKILL after 5 s

 private:
  pid_t pid_ = -1;
  unsigned short port_ = 0;
};

}  // namespace parley::bench
