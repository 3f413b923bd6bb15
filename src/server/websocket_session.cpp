#include "server/websocket_session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket.hpp>
#include <optional>

#include "common/log.hpp"
#include "server/device_session.hpp"

namespace parley::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using asio::awaitable;
using asio::use_awaitable;
constexpr auto as_tuple_awaitable = asio::as_tuple(use_awaitable);

class websocket_session : public std::enable_shared_from_this<websocket_session> {
 public:
  websocket_session(shared_state& state, connection_set& connections, asio::ip::tcp::socket socket)
      : state_(state), connections_(connections), ws_(std::move(socket)),
        auth_timer_(ws_.get_executor()) {}

  void start(beast::http::request<beast::http::string_body> upgrade) {
    asio::co_spawn(ws_.get_executor(), run(shared_from_this(), std::move(upgrade)),
                   [](std::exception_ptr e) {
                     if (!e) return;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       log_error() << "websocket session failed: " << ex.what();
                     }
                   });
  }

 private:
  static awaitable<void> run(std::shared_ptr<websocket_session> self,
                             beast::http::request<beast::http::string_body> upgrade) {
    co_await self->serve(std::move(upgrade));
  }

  awaitable<void> serve(beast::http::request<beast::http::string_body> upgrade) {
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
      res.set(beast::http::field::server, "parleyd");
    }));
    ws_.read_message_max(state_.cfg.limits.max_frame_bytes);
    ws_.binary(true);
    auto [ec] = co_await ws_.async_accept(upgrade, as_tuple_awaitable);
    if (ec) co_return;

    std::weak_ptr<websocket_session> weak = shared_from_this();
    session_ = std::make_shared<device_session>(state_, ws_.get_executor(),
                                                [weak](close_reason r) {
                                                  if (auto self = weak.lock()) self->close(r);
                                                });
    connection_id_ = connections_.add([weak, ex = ws_.get_executor()] {
      asio::post(ex, [weak] {
        if (auto self = weak.lock()) self->close_with(websocket::close_code::going_away, "server shutting down");
      });
    });
    state_.stats.connections.fetch_add(1, std::memory_order_relaxed);
    state_.stats.connections_total.fetch_add(1, std::memory_order_relaxed);

    asio::co_spawn(ws_.get_executor(), write_loop(shared_from_this()), asio::detached);
    auth_timer_.expires_after(state_.cfg.auth_timeout);
    asio::co_spawn(ws_.get_executor(), auth_deadline(weak, &auth_timer_), asio::detached);
    co_await read_loop();

    auth_timer_.cancel();
    session_->closed();
    connections_.remove(connection_id_);
    state_.stats.connections.fetch_sub(1, std::memory_order_relaxed);
  }

  awaitable<void> read_loop() {
    beast::flat_buffer buffer;
    for (;;) {
      auto [ec, n] = co_await ws_.async_read(buffer, as_tuple_awaitable);
      if (ec) co_return;
      const auto data = buffer.cdata();
      co_await session_->handle_frame(
          std::string_view(static_cast<const char*>(data.data()), data.size()));
      if (!auth_timer_cancelled_ && session_->authenticated()) {
        auth_timer_cancelled_ = true;
        auth_timer_.cancel();
      }
      buffer.consume(buffer.size());
      // A large frame must not pin a large buffer to an idle connection.
      if (buffer.capacity() > 16 * 1024) buffer.shrink_to_fit();
    }
  }

  static awaitable<void> write_loop(std::shared_ptr<websocket_session> self) {
    for (;;) {
      auto frame = co_await self->session_->next_outgoing();
      if (!frame) {
        // Everything queued is written: now the close handshake, if one was asked for.
        if (self->close_reason_ && !self->aborted_) {
          auto [ec] = co_await self->ws_.async_close(*self->close_reason_, as_tuple_awaitable);
          if (ec) self->abort();
        }
        co_return;
      }
      auto [ec, n] = co_await self->ws_.async_write(asio::buffer(*frame), as_tuple_awaitable);
      if (ec) {
        self->abort();
        co_return;
      }
    }
  }

  // Closes the connection if it has not authenticated when `timer` expires. The read loop
  // cancels the timer on authentication, so an idle connection holds no coroutine for it.
  static awaitable<void> auth_deadline(std::weak_ptr<websocket_session> weak,
                                       asio::steady_timer* timer) {
    auto [ec] = co_await timer->async_wait(as_tuple_awaitable);
    if (ec) co_return;  // cancelled: authenticated, or the session is gone
    auto self = weak.lock();
    if (self && !self->session_->authenticated()) self->close(close_reason::auth_timeout);
  }

  void close(close_reason reason) {
    switch (reason) {
      case close_reason::slow_reader:
        // The peer is not reading: a close handshake would wait behind the blocked write.
        abort();
        return;
      case close_reason::protocol_violation:
        close_with(websocket::close_code::policy_error, "too many bad frames");
        return;
      case close_reason::auth_timeout:
        close_with(websocket::close_code::policy_error, "authentication timeout");
        return;
      case close_reason::replaced:
        close_with(static_cast<websocket::close_code>(4001), "replaced by a newer connection");
        return;
      case close_reason::internal:
        close_with(websocket::close_code::internal_error, "internal error");
        return;
    }
  }

  // Flushes what is queued, then closes with `code` (done by the write loop).
  void close_with(websocket::close_code code, const char* why) {
    if (closing_ || !session_) return;
    closing_ = true;
    close_reason_ = websocket::close_reason(code, why);
    session_->finish();
  }

  void abort() {
    closing_ = true;
    aborted_ = true;
    beast::get_lowest_layer(ws_).close();
  }

  shared_state& state_;
  connection_set& connections_;
  websocket::stream<beast::tcp_stream> ws_;
  std::shared_ptr<device_session> session_;
  connection_set::id connection_id_ = 0;
  asio::steady_timer auth_timer_;
  bool auth_timer_cancelled_ = false;
  bool closing_ = false;
  bool aborted_ = false;
  std::optional<websocket::close_reason> close_reason_;
};

}  // namespace

void start_websocket_session(shared_state& state, connection_set& connections,
                             asio::ip::tcp::socket socket,
                             beast::http::request<beast::http::string_body> upgrade) {
  std::make_shared<websocket_session>(state, connections, std::move(socket))
      ->start(std::move(upgrade));
}

}  // namespace parley::server
