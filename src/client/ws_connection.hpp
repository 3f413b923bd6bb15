// A client WebSocket connection (ws://HOST:PORT/PATH), binary messages only. Beast's client
// templates are instantiated only in ws_connection.cpp.
//
// Single-threaded: use from one executor (one io_context thread). Writes are queued and sent
// in order by an internal loop, so any coroutine may call send() at any time.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <utility>

namespace parley::client {

class ws_connection {
 public:
  explicit ws_connection(boost::asio::any_io_executor executor);
  ~ws_connection();
  ws_connection(const ws_connection&) = delete;
  ws_connection& operator=(const ws_connection&) = delete;

  // Resolves, connects and completes the handshake within `timeout`.
  // `url` is ws://HOST:PORT[/PATH]; PATH defaults to /v1/ws.
  // `source_address`, if not empty, is the local IP address to connect from (load generators
  // spread connections over 127.0.0.x to get past the ephemeral ports of one address).
  boost::asio::awaitable<boost::system::error_code> connect(std::string url,
                                                            std::chrono::milliseconds timeout,
                                                            std::string source_address = {});

  // Queues one binary message. Fails only later, as an error of read().
  void send(std::string bytes);

  // The next message; an error once the connection is closed or broken.
  boost::asio::awaitable<std::pair<boost::system::error_code, std::string>> read();

  // Sends what is queued, then the close handshake (bounded by `timeout`).
  boost::asio::awaitable<void> close(std::chrono::milliseconds timeout);

  // Drops the TCP connection at once.
  void abort();

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

// Splits ws://HOST:PORT/PATH. Returns false on anything else.
bool parse_ws_url(const std::string& url, std::string& host, std::string& port, std::string& path);

}  // namespace parley::client
