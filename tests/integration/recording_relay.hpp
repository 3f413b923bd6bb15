// Test support: a TCP relay on 127.0.0.1 that forwards every connection to a server and keeps
// a copy of every byte that passed, per direction: "the bytes on the wire".
//
// Client-to-server WebSocket frames are masked (RFC 6455), so plaintext would not show in that
// direction anyway; server-to-client frames are not masked, so a payload the server pushes
// appears there byte for byte.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace parley::test {

class recording_relay {
 public:
  explicit recording_relay(unsigned short server_port);
  ~recording_relay();  // closes every connection and joins its threads

  std::string url() const { return "ws://127.0.0.1:" + std::to_string(port_); }
  std::string to_clients() const;  // everything the server sent
  std::string to_server() const;   // everything the clients sent
  std::size_t connections() const { return connections_.load(); }

 private:
  void accept_loop();
  void pump(std::shared_ptr<boost::asio::ip::tcp::socket> from,
            std::shared_ptr<boost::asio::ip::tcp::socket> to, bool downstream);

  unsigned short server_port_;
  unsigned short port_ = 0;
  boost::asio::io_context io_;  // only for the sockets; every call is blocking
  boost::asio::ip::tcp::acceptor acceptor_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> connections_{0};
  mutable std::mutex mutex_;
  std::string down_, up_;
  std::vector<std::shared_ptr<boost::asio::ip::tcp::socket>> sockets_;
  std::vector<std::thread> threads_;
  std::thread acceptor_thread_;
};

}  // namespace parley::test
