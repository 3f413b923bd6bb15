// Test support: a real parleyd process on 127.0.0.1 port 0 with a temporary data directory,
// and blocking wrappers to drive SDK clients from a test body.
#pragma once

#include <sys/types.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <filesystem>
#include <future>
#include <stdexcept>
#include <string>
#include <vector>

namespace parley::test {

class server_process {
 public:
  // Starts parleyd with `extra_args`; `config_toml`, if not empty, is written to a file and
  // passed with --config. Waits (at most 20 s) for its "listening on" line.
  // `extra_env` entries ("NAME=value") are added to (or replace in) the inherited environment.
  // `command_prefix`, if given, runs parleyd under it (e.g. {"/usr/bin/prlimit", "--nofile=N"}).
  explicit server_process(std::vector<std::string> extra_args = {}, std::string config_toml = {},
                          std::vector<std::string> extra_env = {},
                          std::vector<std::string> command_prefix = {});
  ~server_process();

  std::string url() const { return "ws://127.0.0.1:" + std::to_string(port_); }
  unsigned short port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::filesystem::path& data_dir() const { return data_dir_; }

  void kill9();         // SIGKILL, reaped
  int terminate();      // SIGTERM, waits; returns the exit status
  void restart();       // starts again on the same data directory and port 0
  // As restart(), with `config_toml` as its config from now on (written as at construction).
  void restart(const std::string& config_toml);
  long rss_kb() const;  // VmRSS from /proc

 private:
  void spawn();

  std::vector<std::string> args_;
  std::vector<std::string> env_;
  std::vector<std::string> prefix_;
  std::filesystem::path data_dir_;
  std::filesystem::path config_file_;
  pid_t pid_ = -1;
  unsigned short port_ = 0;
};

// The environment entries a test that bounds the server's RSS passes to it: under ASan, a
// quarantine of zero (ASan keeps freed memory resident on purpose, which would hide what such
// a test measures; the release run checks the same bound without a sanitizer). Else none.
std::vector<std::string> env_for_rss_bounds();

// GET path from the server; returns the body ("" on failure).
std::string http_get(unsigned short port, const std::string& path);
// A metric's value from GET /metrics on `port`, or -1 if it is not there.
long long metric(unsigned short port, const std::string& name);
// Sends `request` as is and returns everything the server answers until it closes (or 10 s).
std::string http_exchange(unsigned short port, const std::string& request);

// What wait_for_close() saw: the bytes the server sent after `bytes` were written, and how
// long after that it closed the connection (`limit` or more when it did not close by then).
struct idle_outcome {
  std::string received;
  std::chrono::duration<double> closed_after{};
};
// Connects to 127.0.0.1:`port`, writes `bytes` (none when empty), then reads until the server
// closes the connection or `limit` passes. For the server's idle and handshake timeouts.
idle_outcome wait_for_close(unsigned short port, const std::string& bytes,
                            std::chrono::seconds limit);

// Runs `a` on `io` until it completes (or `timeout` passes: throws).
template <class T>
T block_on(boost::asio::io_context& io, boost::asio::awaitable<T> a,
           std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto f = boost::asio::co_spawn(io, std::move(a), boost::asio::use_future);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (f.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("block_on timed out");
    io.restart();
    io.run_one_for(std::chrono::milliseconds(50));
  }
  return f.get();
}

}  // namespace parley::test
