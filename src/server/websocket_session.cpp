#include "server/websocket_session.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <optional>

#include "server/device_session.hpp"
#include "ws/connection.hpp"

namespace parley::server {
namespace {

namespace asio = boost::asio;
using asio::awaitable;

class websocket_session final : public ws::connection, public connection_set::member {
 public:
  websocket_session(shared_state& state, connection_set& connections, socket_type socket,
                    admission::ticket ticket)
      : ws::connection(std::move(socket), state.websocket),
        state_(state),
        connections_(connections),
        ticket_(std::move(ticket)) {}

  // Creates the protocol session, registers the connection and starts reading.
  void attach(std::string initial, std::unique_ptr<ws::tls_channel> tls) {
    std::weak_ptr<websocket_session> weak = self();
    const auto executor = this->executor();
    boost::system::error_code ec;
    const auto peer = socket().remote_endpoint(ec);
    session_ = std::make_shared<device_session>(
        state_, executor, ec ? std::string() : peer.address().to_string(),
        [weak](close_reason r) {
          if (auto s = weak.lock()) s->end(r);
        },
        [weak] {
          if (auto s = weak.lock()) {
            s->wake_writer();
            s->on_buffers_changed();  // the outgoing queue grew
          }
        });
    connection_id_ = connections_.add(std::weak_ptr<connection_set::member>(self()));
    set_max_message_bytes(state_.cfg.limits.max_unauthenticated_frame_bytes);
    state_.stats.connections.fetch_add(1, std::memory_order_relaxed);
    state_.stats.connections_total.fetch_add(1, std::memory_order_relaxed);
    // Only until authentication: an authenticated idle connection holds no timer.
    auth_timer_ = std::make_unique<asio::steady_timer>(executor, state_.cfg.auth_timeout);
    auth_timer_->async_wait([weak](const boost::system::error_code& ec) {
      if (ec) return;  // cancelled: authenticated, or the session is gone
      auto s = weak.lock();
      if (s && !s->session_->authenticated()) s->end(close_reason::auth_timeout);
    });
    start(std::move(initial), std::move(tls));
  }

  // connection_set::member: called from any thread while the set holds a reference, so each
  // posts to the connection's executor (which never changes after construction).
  void close_for_shutdown() override {
    asio::post(executor(), [s = self()] {
      s->close_gracefully(ws::close_code::going_away, "server shutting down");
    });
  }
  void shed() override {
    asio::post(executor(), [s = self()] {
      s->session_->finish();
      s->abort();
    });
  }
  std::size_t held() const override { return held_.load(std::memory_order_relaxed); }

 private:
  std::shared_ptr<websocket_session> self() {
    return std::static_pointer_cast<websocket_session>(shared_from_this());
  }

  std::optional<awaitable<void>> on_message(std::string_view bytes) override {
    if (auto rest = session_->handle_frame(bytes)) return after_auth_step(self(), std::move(*rest));
    return session_->read_pause();
  }

  // Register and Authenticate (one at a time before authentication): once authenticated, the
  // connection holds no timer.
  static awaitable<void> after_auth_step(std::shared_ptr<websocket_session> self,
                                         awaitable<void> step) {
    co_await std::move(step);
    if (self->auth_timer_ && self->session_->authenticated()) {
      self->auth_timer_.reset();
      self->ticket_.authenticated();
      self->set_max_message_bytes(self->state_.cfg.limits.max_frame_bytes);
    }
  }

  // Reports this connection's buffered bytes to the memory budget (admission), which may
  // shed the largest holders when all together exceed it.
  void on_buffers_changed() override {
    if (gone_) return;
    const std::size_t now = buffered_bytes() + session_->outgoing_bytes();
    const std::size_t before = held_.exchange(now, std::memory_order_relaxed);
    if (now != before) {
      state_.admit.buffered(static_cast<std::ptrdiff_t>(now) - static_cast<std::ptrdiff_t>(before));
    }
  }

  message next_outgoing() override { return session_->pop_outgoing(); }

  // The peer is closing: what is queued goes out before the echo, nothing more is queued (a
  // drain or live pushes would otherwise keep the echo waiting; their events stay queued in
  // the store for the next connection).
  void on_close_received() override { session_->finish(); }

  void on_closed() override {
    gone_ = true;
    auth_timer_.reset();
    session_->closed();
    connections_.remove(connection_id_);
    state_.admit.buffered(-static_cast<std::ptrdiff_t>(held_.exchange(0)));
    ticket_.release();
    state_.stats.connections.fetch_sub(1, std::memory_order_relaxed);
  }

  void end(close_reason reason) {
    switch (reason) {
      case close_reason::slow_reader:
        // The peer is not reading: a close handshake would wait behind the blocked write.
        abort();
        return;
      case close_reason::protocol_violation:
        close_gracefully(ws::close_code::policy_violation, "too many bad frames");
        return;
      case close_reason::auth_timeout:
        close_gracefully(ws::close_code::policy_violation, "authentication timeout");
        return;
      case close_reason::replaced:
        close_gracefully(std::uint16_t{4001}, "replaced by a newer connection");
        return;
      case close_reason::internal:
        close_gracefully(ws::close_code::internal_error, "internal error");
        return;
    }
  }

  // What is queued is still written, then the close frame (ws::connection::close).
  template <class Code>
  void close_gracefully(Code code, std::string_view why) {
    session_->finish();
    close(code, why);
  }

  shared_state& state_;
  connection_set& connections_;
  std::shared_ptr<device_session> session_;
  connection_set::id connection_id_ = 0;
  std::unique_ptr<asio::steady_timer> auth_timer_;
  admission::ticket ticket_;
  std::atomic<std::size_t> held_{0};  // last reported to the budget; read by shedding
  bool gone_ = false;                 // on_closed() ran: nothing more to report
};

}  // namespace

void start_websocket_session(shared_state& state, connection_set& connections,
                             asio::ip::tcp::socket socket, std::string initial,
                             admission::ticket ticket, std::unique_ptr<ws::tls_channel> tls) {
  std::make_shared<websocket_session>(state, connections, std::move(socket), std::move(ticket))
      ->attach(std::move(initial), std::move(tls));
}

}  // namespace parley::server
