#include "server/listener.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <optional>

#include "common/log.hpp"
#include "server/http_session.hpp"

namespace parley::server {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// Over a connection limit: one non-blocking write of a fixed answer (a new socket's buffer
// always has room for it), then close. Nothing is read and nothing waits.
template <class Socket>
void refuse(Socket& socket) {
  static constexpr std::string_view answer =
      "HTTP/1.1 503 Service Unavailable\r\nServer: parleyd\r\nRetry-After: 5\r\n"
      "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 33\r\n"
      "Connection: close\r\n\r\ntoo many connections; try later\r\n";
  boost::system::error_code ignored;
  socket.non_blocking(true, ignored);
  socket.write_some(asio::buffer(answer.data(), answer.size()), ignored);
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
}

}  // namespace

listener::listener(std::vector<std::unique_ptr<asio::io_context>>& contexts,
                   const tcp::endpoint& endpoint, shared_state& state, connection_set& connections,
                   http_role role, admission& admit)
    : contexts_(contexts),
      acceptor_(*contexts[0]),
      state_(state),
      connections_(connections),
      role_(role),
      admit_(admit) {
  acceptor_.open(endpoint.protocol());
  acceptor_.set_option(asio::socket_base::reuse_address(true));
  acceptor_.bind(endpoint);
  acceptor_.listen(asio::socket_base::max_listen_connections);
}

void listener::start() { asio::co_spawn(acceptor_.get_executor(), accept_loop(), asio::detached); }

void listener::stop() {
  asio::post(acceptor_.get_executor(), [this] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  });
}

asio::awaitable<void> listener::accept_loop() {
  for (;;) {
    auto& context = *contexts_[next_++ % contexts_.size()];
    auto [ec, socket] =
        co_await acceptor_.async_accept(context, asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (!acceptor_.is_open() || ec == asio::error::operation_aborted) co_return;
      // Out of file descriptors (EMFILE) and the like: back off instead of spinning.
      log_warn() << "accept failed: " << ec.message();
      asio::steady_timer pause(acceptor_.get_executor(), std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    boost::system::error_code ignored;
    const auto peer = socket.remote_endpoint(ignored);
    auto ticket =
        admit_.admit(ignored ? std::nullopt : std::optional<asio::ip::address>(peer.address()));
    if (!ticket) {
      refuse(socket);
      state_.stats.connections_refused.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ignored);
    std::unique_ptr<ws::tls_channel> tls;
    if (state_.tls && role_ != http_role::metrics) {
      tls = state_.tls->new_session(socket.native_handle());
      if (!tls) {
        log_error() << "TLS: cannot create a session for a new connection";
        continue;  // the socket closes as it goes out of scope
      }
    }
    start_http_session(state_, connections_, std::move(socket), std::move(ticket), role_,
                       std::move(tls));
  }
}

}  // namespace parley::server
