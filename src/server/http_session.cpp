#include "server/http_session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include "server/websocket_session.hpp"
#include "ws/handshake.hpp"

namespace parley::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

http::response<http::string_body> respond(const http::request<http::string_body>& req,
                                          http::status status, std::string body,
                                          const char* content_type = "text/plain; charset=utf-8") {
  http::response<http::string_body> res{status, req.version()};
  res.set(http::field::server, "parleyd");
  res.set(http::field::content_type, content_type);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

// The status a failed read of a request earns, or none when the peer just went away (end of
// stream, reset, timeout): nobody to answer then.
std::optional<http::status> status_for(const beast::error_code& ec) {
  if (ec == http::error::header_limit) return http::status::request_header_fields_too_large;
  if (ec == http::error::body_limit) return http::status::payload_too_large;
  if (ec.category() == http::make_error_code(http::error::bad_version).category() &&
      ec != http::error::end_of_stream && ec != http::error::partial_message) {
    return http::status::bad_request;
  }
  return std::nullopt;
}

awaitable<void> serve(shared_state& state, connection_set& connections,
                      asio::ip::tcp::socket socket, admission::ticket ticket, http_role role) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    stream.expires_after(std::chrono::seconds(30));
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(64 * 1024);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, as_tuple_awaitable);
    if (ec) {
      if (auto status = status_for(ec)) {
        http::response<http::string_body> res{*status, 11};
        res.set(http::field::server, "parleyd");
        res.set(http::field::content_type, "text/plain; charset=utf-8");
        res.keep_alive(false);
        res.body() = std::string(http::obsolete_reason(*status)) + ": " + ec.message() + "\n";
        res.prepare_payload();
        co_await http::async_write(stream, res, as_tuple_awaitable);
      }
      break;
    }
    auto req = parser.release();

    if (beast::websocket::is_upgrade(req) && role != http_role::metrics) {
      if (req.target() != "/v1/ws") {
        auto res =
            respond(req, http::status::not_found, "no WebSocket endpoint here; use /v1/ws\n");
        res.keep_alive(false);
        co_await http::async_write(stream, res, as_tuple_awaitable);
        break;
      }
      auto initial = co_await ws::answer_upgrade(stream, buffer, req, "parleyd");
      if (!initial) break;
      stream.expires_never();
      start_websocket_session(state, connections, stream.release_socket(), std::move(*initial),
                              std::move(ticket));
      co_return;
    }

    http::response<http::string_body> res;
    if (req.method() != http::verb::get) {
      res = respond(req, http::status::method_not_allowed, "only GET here\n");
    } else if (req.target() == "/healthz") {
      // Unhealthy while the store refuses writes: a load balancer then sends new users
      // elsewhere, and an operator sees why.
      const auto health = state.store.health();
      res = health.writable
                ? respond(req, http::status::ok, "ok\n")
                : respond(req, http::status::service_unavailable, "store: " + health.reason + "\n");
    } else if (req.target() == "/metrics" && role != http_role::main_no_metrics) {
      metrics::gauges g;
      g.queue_depth = state.store.queued_events_estimate();
      g.store_writable = state.store.health().writable;
      g.buffered_bytes = state.admit.buffered_bytes();
      g.open_connections = state.admit.open();
      g.max_connections = state.admit.max_connections();
      res = respond(req, http::status::ok, state.stats.render(g), "text/plain; version=0.0.4");
    } else {
      res = respond(req, http::status::not_found, "not found\n");
    }
    const bool keep_alive = res.keep_alive();
    auto [wec, wn] = co_await http::async_write(stream, res, as_tuple_awaitable);
    if (wec || !keep_alive) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
}

}  // namespace

void start_http_session(shared_state& state, connection_set& connections,
                        asio::ip::tcp::socket socket, admission::ticket ticket, http_role role) {
  auto ex = socket.get_executor();
  asio::co_spawn(ex, serve(state, connections, std::move(socket), std::move(ticket), role),
                 asio::detached);
}

}  // namespace parley::server
