// parleyd assembled: the embedded backends (RocksDB store, in-process presence and bus), one
// io_context per thread, the listener. start() binds; wait() blocks until stop() or a signal.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <optional>

#include "server/config.hpp"

namespace parley::server {

class server {
 public:
  // Opens the store; throws std::runtime_error if it cannot.
  explicit server(config cfg);
  ~server();

  // Binds and starts serving. Returns the bound endpoint (useful with port 0).
  boost::asio::ip::tcp::endpoint start();

  // The metrics address's bound endpoint once started; nullopt without one (config.hpp).
  std::optional<boost::asio::ip::tcp::endpoint> metrics_endpoint() const;
  // The blob server's bound endpoint once started (media_config).
  std::optional<boost::asio::ip::tcp::endpoint> media_endpoint() const;

  // Blocks until SIGINT/SIGTERM or stop(), then shuts down in order: stop accepting, close
  // every connection (2 s grace), finish the store's queued writes, stop the threads.
  void wait();

  // Thread-safe; idempotent.
  void stop();

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace parley::server
