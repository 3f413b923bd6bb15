#include "redis_server.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace parley::test_support {

namespace fs = std::filesystem;

unsigned short free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("free_port: cannot bind");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

namespace {

pid_t spawn(const std::vector<std::string>& argv, const fs::path& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  return pid;
}

std::string run_output(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const auto& a : argv) cmd += "'" + a + "' ";
  cmd += "2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), p) != nullptr) out += buf.data();
  ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

fs::path fresh_dir(const std::string& prefix) {
  std::random_device rd;
  auto d = fs::temp_directory_path() / (prefix + std::to_string(rd()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

namespace {

bool bindable(unsigned short port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (fd >= 0) ::close(fd);
  return ok;
}

// A cluster node also listens on its port + 10000 (the cluster bus), which must exist.
unsigned short port_for(const std::vector<std::string>& extra) {
  const bool cluster = std::find(extra.begin(), extra.end(), "--cluster-enabled") != extra.end();
  for (int i = 0; i < 1000; ++i) {
    const unsigned short p = free_port();
    if (!cluster || (p <= 55535 && bindable(static_cast<unsigned short>(p + 10000)))) return p;
  }
  throw std::runtime_error("no free port pair for a Redis Cluster node");
}

}  // namespace

redis_server::redis_server(std::vector<std::string> extra_args)
    : extra_(std::move(extra_args)), dir_(fresh_dir("parley_redis_")), port_(port_for(extra_)) {
  start();
}

redis_server::~redis_server() {
  kill9();
  std::error_code ignored;
  fs::remove_all(dir_, ignored);
}

void redis_server::start() {
  std::vector<std::string> argv{"/usr/bin/redis-server", "--port", std::to_string(port_),
                                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", dir_.string(), "--daemonize", "no"};
  argv.insert(argv.end(), extra_.begin(), extra_.end());
  pid_ = spawn(argv, dir_ / "redis.log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (cli({"PING"}) == "PONG") return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill9();
  throw std::runtime_error("redis-server on port " + std::to_string(port_) + " did not answer");
}

std::unique_ptr<redis_server::paused> redis_server::pause() {
  if (pid_ <= 0 || ::kill(pid_, SIGSTOP) != 0) return nullptr;
  return std::make_unique<paused>(pid_);
}

bool redis_server::paused::resume() {
  if (pid_ <= 0) return true;
  const bool ok = ::kill(pid_, SIGCONT) == 0;
  pid_ = -1;
  return ok;
}

void redis_server::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string redis_server::cli(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{"/usr/bin/redis-cli", "-h", "127.0.0.1", "-p",
                                std::to_string(port_)};
  // A server started with --requirepass: redis-cli logs in with it.
  for (std::size_t i = 0; i + 1 < extra_.size(); ++i) {
    if (extra_[i] == "--requirepass") {
      argv.insert(argv.end(), {"--no-auth-warning", "-a", extra_[i + 1]});
    }
  }
  argv.insert(argv.end(), args.begin(), args.end());
  return run_output(argv);
}

redis_cluster::redis_cluster(int replicas) : dir_(fresh_dir("parley_redis_cluster_")) {
  std::vector<std::string> addresses;
  for (int i = 0; i < 3 * (1 + replicas); ++i) {
    nodes_.push_back(std::make_unique<redis_server>(std::vector<std::string>{
        "--cluster-enabled", "yes", "--cluster-config-file",
        (dir_ / ("nodes-" + std::to_string(i) + ".conf")).string(), "--cluster-node-timeout",
        "2000"}));
    addresses.push_back("127.0.0.1:" + std::to_string(nodes_.back()->port()));
  }
  std::vector<std::string> create{"/usr/bin/redis-cli", "--cluster", "create"};
  create.insert(create.end(), addresses.begin(), addresses.end());
  // redis-cli makes the first three the masters (each on its own host it would spread them;
  // on one host it takes them in order) and the rest their replicas.
  create.insert(create.end(), {"--cluster-replicas", std::to_string(replicas), "--cluster-yes"});
  const std::string out = run_output(create);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (auto& n : nodes_) {
    while (n->cli({"CLUSTER", "INFO"}).find("cluster_state:ok") == std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("Redis Cluster did not become ok: " + out);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  // A replica takes over only once it has synced with its master (a replica that never did
  // is "disconnected for too long" and refuses to stand).
  for (auto& n : nodes_) {
    for (;;) {
      const std::string info = n->cli({"INFO", "replication"});
      if (info.find("role:master") != std::string::npos ||
          info.find("master_link_status:up") != std::string::npos)
        break;
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("a Redis Cluster replica did not sync: " + info);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

redis_cluster::~redis_cluster() {
  nodes_.clear();
  std::error_code ignored;
  fs::remove_all(dir_, ignored);
}

std::size_t redis_cluster::master_of(const std::string& key, std::size_t asked) {
  const int slot = std::stoi(nodes_[asked]->cli({"CLUSTER", "KEYSLOT", key}));
  // Lines: ID HOST:PORT@BUS FLAGS MASTER PING PONG EPOCH LINK SLOT-RANGE...
  std::istringstream lines(nodes_[asked]->cli({"CLUSTER", "NODES"}));
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    if (f.size() < 9 || f[2].find("master") == std::string::npos ||
        f[2].find("fail") != std::string::npos || f[7] != "connected")
      continue;
    for (std::size_t i = 8; i < f.size(); ++i) {
      const auto dash = f[i].find('-');
      if (f[i].front() == '[') continue;  // a slot being migrated
      const int from = std::stoi(f[i].substr(0, dash));
      const int to = dash == std::string::npos ? from : std::stoi(f[i].substr(dash + 1));
      if (slot < from || slot > to) continue;
      const auto port = static_cast<unsigned short>(
          std::stoi(f[1].substr(f[1].find(':') + 1, f[1].find('@') - f[1].find(':') - 1)));
      for (std::size_t n = 0; n < nodes_.size(); ++n)
        if (nodes_[n]->port() == port) return n;
    }
  }
  return nodes_.size();
}

bool redis_cluster::wait_for_master(const std::string& key, std::size_t asked) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (nodes_[asked]->cli({"CLUSTER", "INFO"}).find("cluster_state:ok") != std::string::npos &&
        master_of(key, asked) < nodes_.size())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

std::string redis_cluster::url() const {
  return "redis://127.0.0.1:" + std::to_string(nodes_.front()->port()) + "?cluster=1";
}

}  // namespace parley::test_support
