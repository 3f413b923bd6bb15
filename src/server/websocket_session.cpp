#include "server/websocket_session.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

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
      : state_(state),
        connections_(connections),
        ws_(std::move(socket)),
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
  // The whole connection in one coroutine frame (an idle connection holds this frame and
  // Beast's pending read, nothing else): handshake, then the read loop.
  static awaitable<void> run(std::shared_ptr<websocket_session> self,
                             beast::http::request<beast::http::string_body> upgrade) {
    auto& ws = self->ws_;
    ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(beast::http::field::server, "parleyd"); }));
    ws.read_message_max(self->state_.cfg.limits.max_frame_bytes);
    ws.binary(true);
    auto [ec] = co_await ws.async_accept(upgrade, as_tuple_awaitable);
    upgrade = {};  // its headers would otherwise stay allocated for the connection's life
    if (ec) co_return;
    self->attach();

    beast::flat_buffer buffer;
    for (;;) {
      auto [rec, n] = co_await ws.async_read(buffer, as_tuple_awaitable);
      if (rec) break;
      const auto data = buffer.cdata();
      co_await self->session_->handle_frame(
          std::string_view(static_cast<const char*>(data.data()), data.size()));
      if (!self->auth_timer_cancelled_ && self->session_->authenticated()) {
        self->auth_timer_cancelled_ = true;
        self->auth_timer_.cancel();
      }
      buffer.consume(buffer.size());
      // A large frame must not pin a large buffer to an idle connection.
      if (buffer.capacity() > 2048) buffer.shrink_to_fit();
    }
    self->detach();
  }

  // The handshake is done: create the protocol session and register the connection.
  void attach() {
    std::weak_ptr<websocket_session> weak = shared_from_this();
    session_ = std::make_shared<device_session>(
        state_, ws_.get_executor(),
        [weak](close_reason r) {
          if (auto self = weak.lock()) self->close(r);
        },
        [weak] {
          if (auto self = weak.lock()) self->wake_writer();
        });
    connection_id_ = connections_.add([weak, ex = ws_.get_executor()] {
      asio::post(ex, [weak] {
        if (auto self = weak.lock())
          self->close_with(websocket::close_code::going_away, "server shutting down");
      });
    });
    state_.stats.connections.fetch_add(1, std::memory_order_relaxed);
    state_.stats.connections_total.fetch_add(1, std::memory_order_relaxed);
    auth_timer_.expires_after(state_.cfg.auth_timeout);
    asio::co_spawn(ws_.get_executor(), auth_deadline(weak, &auth_timer_), asio::detached);
  }

  void detach() {
    auth_timer_.cancel();
    session_->closed();
    connections_.remove(connection_id_);
    state_.stats.connections.fetch_sub(1, std::memory_order_relaxed);
  }

  void cork(bool on) {
    corked_ = on;
    const int value = on ? 1 : 0;
    // A failure only costs the batching: frames are still written, one packet each.
    ::setsockopt(beast::get_lowest_layer(ws_).socket().native_handle(), IPPROTO_TCP, TCP_CORK,
                 &value, sizeof value);
  }

  // Starts the write loop if it is not running. It runs only while there is something to
  // write, so an idle connection holds no writer coroutine.
  void wake_writer() {
    if (writing_ || aborted_) return;
    writing_ = true;
    asio::co_spawn(ws_.get_executor(), write_loop(shared_from_this()), asio::detached);
  }

  // While more frames wait behind the one being written (a drain, a burst), the socket is
  // corked: the kernel packs the frames into full segments instead of sending one packet per
  // frame. The cork comes off (flushing) as soon as the queue is empty, and after every
  // `max_corked_frames` frames, so that a queue that never empties cannot hold a frame back
  // for longer than that many writes.
  static constexpr int max_corked_frames = 64;
  static awaitable<void> write_loop(std::shared_ptr<websocket_session> self) {
    int corked_frames = 0;
    while (auto frame = self->session_->pop_outgoing()) {
      if (self->corked_ && corked_frames >= max_corked_frames) self->cork(false);
      if (!self->corked_ && self->session_->outgoing_frames() > 0) {
        self->cork(true);
        corked_frames = 0;
      }
      if (self->corked_) ++corked_frames;
      auto [ec, n] = co_await self->ws_.async_write(asio::buffer(*frame), as_tuple_awaitable);
      if (ec) {
        self->abort();
        self->writing_ = false;
        co_return;
      }
    }
    if (self->corked_) self->cork(false);
    // Everything queued is written: now the close handshake, if one was asked for.
    if (self->session_->finishing() && self->close_reason_ && !self->aborted_ &&
        !self->close_sent_) {
      self->close_sent_ = true;
      auto [ec] = co_await self->ws_.async_close(*self->close_reason_, as_tuple_awaitable);
      if (ec) self->abort();
    }
    self->writing_ = false;
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
  bool writing_ = false;
  bool corked_ = false;
  bool close_sent_ = false;
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
