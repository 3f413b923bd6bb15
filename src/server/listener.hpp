// Accepts TCP connections and spreads them over the server's io_contexts, one per thread.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <vector>

#include "server/connection_set.hpp"
#include "server/http_session.hpp"
#include "server/shared_state.hpp"

namespace parley::server {

class listener {
 public:
  // Binds at once (throws boost::system::system_error if it cannot). The acceptor lives on
  // contexts[0]; accepted sockets go to the contexts round-robin.
  // Each accepted connection is admitted (`admit`) or refused at once: a refused one gets
  // a fixed "503 Service Unavailable" written without waiting, and is closed.
  listener(std::vector<std::unique_ptr<boost::asio::io_context>>& contexts,
           const boost::asio::ip::tcp::endpoint& endpoint, shared_state& state,
           connection_set& connections, http_role role, admission& admit);

  boost::asio::ip::tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

  void start();
  // Stops accepting (posted to the acceptor's executor). Thread-safe.
  void stop();

 private:
  boost::asio::awaitable<void> accept_loop();

  std::vector<std::unique_ptr<boost::asio::io_context>>& contexts_;
  boost::asio::ip::tcp::acceptor acceptor_;
  shared_state& state_;
  connection_set& connections_;
  std::size_t next_ = 0;
  http_role role_;
  admission& admit_;
};

}  // namespace parley::server
