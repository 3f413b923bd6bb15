// Worker processes of parley-bench. One process may hold at most 20,000 open files here, so
// the generator forks workers, each with its own io_context and its share of connections, and
// talks to them over two pipes with one-line text messages.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

namespace parley::bench {

// The worker's end: line-based, blocking.
class worker_channel {
 public:
  worker_channel(int in_fd, int out_fd) : in_(in_fd), out_(out_fd) {}
  void send(const std::string& line);
  std::string receive();  // "" when the parent is gone

 private:
  int in_;
  int out_;
  std::string buffer_;
};

class worker_pool {
 public:
  // Forks `count` workers; each runs body(index, channel) and exits with its return value.
  worker_pool(int count, const std::function<int(int index, worker_channel&)>& body);
  ~worker_pool();

  // One line from every worker, in worker order. Throws if a worker died.
  std::vector<std::string> collect();
  void broadcast(const std::string& line);
  // Waits for every worker; true if all exited 0.
  bool join();

 private:
  struct worker {
    pid_t pid = -1;
    int to_child = -1;
    int from_child = -1;
    std::string buffer;
  };
  std::vector<worker> workers_;
};

}  // namespace parley::bench
