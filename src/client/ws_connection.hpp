// A client WebSocket connection (ws://HOST:PORT/PATH, or wss:// over TLS), binary messages
// only. Beast's client templates are instantiated only in ws_connection.cpp.
//
// wss:// checks the server's certificate (TLS 1.2 or later): it must chain to a trusted CA
// (the system's store, or only those of set_ca_file()) and be valid for HOST (its DNS name or
// IP address); HOST is sent as SNI unless it is an IP address. A certificate that fails makes
// connect() fail, with an error whose message starts "TLS: certificate verify failed: " and
// gives OpenSSL's reason. There is no fallback to plaintext or to an unchecked certificate.
// ws:// is the plain stream as before: the TLS choice costs one branch per read and write.
//
// Single-threaded: use from one executor (one io_context thread). Writes are queued and sent
// in order by an internal loop, so any coroutine may call send() at any time.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace parley::client {

class ws_connection {
 public:
  // The largest message read() takes; a larger one fails read() with Beast's
  // websocket::error::message_too_big and closes the connection (1009). The server's
  // largest frame, a History page, is under it (docs/protocol.md §1, "Message sizes").
  static constexpr std::uint64_t max_message_bytes = 1024 * 1024;

  explicit ws_connection(boost::asio::any_io_executor executor);
  ~ws_connection();
  ws_connection(const ws_connection&) = delete;
  ws_connection& operator=(const ws_connection&) = delete;

  // For wss:// only, before connect(): trust only the CA certificates in the PEM file at
  // `path` instead of the system's store. Empty (the default) means the system's store. The
  // file is read by connect(), which fails ("TLS: cannot load the CA file: ...") if it holds
  // no certificate or cannot be read.
  void set_ca_file(std::string path);

  // Resolves, connects and completes the TLS handshake (wss://) and the WebSocket handshake,
  // each step within `timeout` (a name not resolved by then fails with timed_out). `url` is as
  // parse_ws_url() takes it; anything else fails with invalid_argument. `source_address`, if not
  // empty, is the local IP address to connect from (load generators spread connections over
  // 127.0.0.x to get past the ephemeral ports of one address).
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

// Splits ws://HOST[:PORT][/PATH] or wss://HOST[:PORT][/PATH]; `tls` is set for wss://. PORT is
// a decimal number from 1 to 65535, 80 (ws) or 443 (wss) if left out; PATH defaults to /v2/ws
// (also for a bare "/"); an IPv6 HOST is written in brackets (ws://[::1]:8080) and returned
// without them. Returns false on anything else (ws_url_problem() says why), leaving the out
// parameters as they were.
bool parse_ws_url(const std::string& url, std::string& host, std::string& port, std::string& path,
                  bool& tls);

// Why parse_ws_url() refuses `url`, in words a person can act on (e.g. "the port must be a
// number from 1 to 65535, got '70000'"); empty if it accepts it.
std::string ws_url_problem(const std::string& url);

}  // namespace parley::client
