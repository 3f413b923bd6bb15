// Test support: real redis-server processes on loopback (Debian's redis-server), started and
// stopped by the test itself (CI runs no Redis): one server, or a Redis Cluster of three
// masters (cluster mode, slots assigned with redis-cli --cluster create).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace parley::test_support {

class redis_server {
 public:
  // Starts on a free port (persistence off unless `dir` is given for cluster state), and waits
  // (at most 10 s) until it answers PING.
  explicit redis_server(std::vector<std::string> extra_args = {});
  ~redis_server();
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  unsigned short port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  pid_t pid() const { return pid_; }
  void kill9();   // SIGKILL, reaped
  void start();   // again, on the same port
  // SIGSTOP until resume() or the guard's end (SIGCONT): the server keeps its port and its
  // connections and answers nothing, as a host gone without a reset. (Its port is not freed
  // for a test running alongside to take, as after kill9().)
  class paused {
   public:
    explicit paused(pid_t pid) : pid_(pid) {}
    ~paused() { resume(); }
    paused(const paused&) = delete;
    paused& operator=(const paused&) = delete;
    bool resume();  // false if SIGCONT failed; idempotent
   private:
    pid_t pid_;
  };
  [[nodiscard]] std::unique_ptr<paused> pause();  // null if SIGSTOP failed
  // Runs one command with redis-cli and returns its output (trimmed).
  std::string cli(const std::vector<std::string>& args) const;

 private:
  std::vector<std::string> extra_;
  std::filesystem::path dir_;
  unsigned short port_ = 0;
  pid_t pid_ = -1;
};

class redis_cluster {
 public:
  // Three masters and `replicas` replicas of each, which take over a master that fails
  // (cluster-node-timeout 2 s; which nodes are the masters is redis-cli's choice: master_of
  // tells); waits until cluster_state is ok on each.
  explicit redis_cluster(int replicas = 0);
  ~redis_cluster();
  std::string url() const;  // redis://127.0.0.1:PORT?cluster=1 (the first master as the seed)
  redis_server& node(std::size_t i) { return *nodes_[i]; }
  std::size_t size() const { return nodes_.size(); }
  // The node that is the master of `key`'s slot now, as `asked` sees it (CLUSTER NODES);
  // size() if none is (a failed master whose replica has not taken over yet).
  std::size_t master_of(const std::string& key, std::size_t asked = 0);
  // Waits (at most 30 s) until `asked` reports cluster_state:ok and a live master for `key`.
  bool wait_for_master(const std::string& key, std::size_t asked);

 private:
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<redis_server>> nodes_;
};

// A free TCP port on 127.0.0.1 (bound and released; a race with other processes is possible
// but unlikely on a test machine).
unsigned short free_port();

}  // namespace parley::test_support
