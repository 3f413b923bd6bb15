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

awaitable<void> serve(shared_state& state, connection_set& connections,
                      asio::ip::tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    stream.expires_after(std::chrono::seconds(30));
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(64 * 1024);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, as_tuple_awaitable);
    if (ec) break;
    auto req = parser.release();

    if (beast::websocket::is_upgrade(req)) {
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
      start_websocket_session(state, connections, stream.release_socket(), std::move(*initial));
      co_return;
    }

    http::response<http::string_body> res;
    if (req.method() != http::verb::get) {
      res = respond(req, http::status::method_not_allowed, "only GET here\n");
    } else if (req.target() == "/healthz") {
      res = respond(req, http::status::ok, "ok\n");
    } else if (req.target() == "/metrics") {
      res = respond(req, http::status::ok, state.stats.render(state.store.queued_events_estimate()),
                    "text/plain; version=0.0.4");
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
                        asio::ip::tcp::socket socket) {
  auto ex = socket.get_executor();
  asio::co_spawn(ex, serve(state, connections, std::move(socket)), asio::detached);
}

}  // namespace parley::server
