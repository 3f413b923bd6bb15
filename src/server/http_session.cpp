#include "server/http_session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <sstream>

#include "common/log.hpp"
#include "server/websocket_session.hpp"
#include "ws/handshake.hpp"

namespace parley::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

// What one request may hold while it is read: every endpoint is a GET without a body, and a
// browser's headers fit in a few KiB. Small, because these bytes are outside the memory
// budget: at most (8 + 1) KiB per unauthenticated connection.
constexpr std::uint32_t max_header_bytes = 8 * 1024;
constexpr std::uint64_t max_body_bytes = 1024;

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

// Everything but the WebSocket upgrade: /healthz, /metrics (unless `role` excludes them),
// 404 and 405.
http::response<http::string_body> answer_request(shared_state& state,
                                                 const http::request<http::string_body>& req,
                                                 http_role role) {
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
    g.pending_writes = state.store.pending_writes();
    g.store_writable = state.store.health().writable;
    g.buffered_bytes = state.admit.buffered_bytes();
    g.open_connections = state.admit.open();
    g.max_connections = state.admit.max_connections();
    res = respond(req, http::status::ok, state.stats.render(g), "text/plain; version=0.0.4");
  } else {
    res = respond(req, http::status::not_found, "not found\n");
  }
  return res;
}

// A 404 for an upgrade anywhere but /v2/ws, or none.
std::optional<http::response<http::string_body>> wrong_websocket_path(
    const http::request<http::string_body>& req) {
  if (req.target() == "/v2/ws") return std::nullopt;
  auto res = respond(req, http::status::not_found, "no WebSocket endpoint here; use /v2/ws (protocol v1 is retired)\n");
  res.keep_alive(false);
  return res;
}

// The answer to a request that could not be read, or none when the peer just went away.
std::optional<http::response<http::string_body>> answer_bad_request(const beast::error_code& ec) {
  const auto status = status_for(ec);
  if (!status) return std::nullopt;
  http::response<http::string_body> res{*status, 11};
  res.set(http::field::server, "parleyd");
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  res.keep_alive(false);
  res.body() = std::string(http::obsolete_reason(*status)) + ": " + ec.message() + "\n";
  res.prepare_payload();
  return res;
}

awaitable<void> serve(shared_state& state, connection_set& connections,
                      asio::ip::tcp::socket socket, admission::ticket ticket, http_role role) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    stream.expires_after(std::chrono::seconds(30));
    http::request_parser<http::string_body> parser;
    parser.header_limit(max_header_bytes);
    parser.body_limit(max_body_bytes);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, as_tuple_awaitable);
    if (ec) {
      if (auto res = answer_bad_request(ec))
        co_await http::async_write(stream, *res, as_tuple_awaitable);
      break;
    }
    auto req = parser.release();

    if (beast::websocket::is_upgrade(req) && role != http_role::metrics) {
      if (auto res = wrong_websocket_path(req)) {
        co_await http::async_write(stream, *res, as_tuple_awaitable);
        break;
      }
      auto initial = co_await ws::answer_upgrade(stream, buffer, req, "parleyd");
      if (!initial) break;
      stream.expires_never();
      start_websocket_session(state, connections, stream.release_socket(), std::move(*initial),
                              std::move(ticket), nullptr);
      co_return;
    }

    auto res = answer_request(state, req, role);
    const bool keep_alive = res.keep_alive();
    auto [wec, wn] = co_await http::async_write(stream, res, as_tuple_awaitable);
    if (wec || !keep_alive) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
}

// --- HTTPS and wss://
// -----------------------------------------------------------------------------
//
// The same requests over TLS. OpenSSL works on the socket's descriptor (ws::tls_channel), so
// that after the upgrade the session moves to ws::connection as it is; Beast's parser is fed
// the decrypted bytes by hand, and answers are serialized and written through the session.

using tcp_socket = asio::ip::tcp::socket;

// Waits until `socket` is ready for what TLS wants (`state`: want_read or want_write); false
// if the wait failed or the session's deadline cancelled it.
awaitable<bool> wait_for(tcp_socket& socket, ws::tls_channel::status state) {
  auto [ec] = co_await socket.async_wait(
      state == ws::tls_channel::status::want_write ? tcp_socket::wait_write : tcp_socket::wait_read,
      as_tuple_awaitable);
  co_return !ec;
}

awaitable<bool> tls_write_all(tcp_socket& socket, ws::tls_channel& tls, std::string bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const auto r = tls.write(bytes.data() + done, bytes.size() - done);
    if (r.state == ws::tls_channel::status::ok) {
      done += r.bytes;
    } else if (r.state == ws::tls_channel::status::want_read ||
               r.state == ws::tls_channel::status::want_write) {
      if (!co_await wait_for(socket, r.state)) co_return false;
    } else {
      co_return false;
    }
  }
  co_return true;
}

template <class Message>
std::string serialized(const Message& m) {
  std::ostringstream out;
  out << m;
  return out.str();
}

awaitable<void> serve_tls(shared_state& state, connection_set& connections, tcp_socket socket,
                          admission::ticket ticket, http_role role,
                          std::unique_ptr<ws::tls_channel> tls) {
  boost::system::error_code ignored;
  socket.non_blocking(true, ignored);
  // One deadline at a time (the handshake, then each request): it cancels the pending wait.
  asio::steady_timer deadline(socket.get_executor());
  auto arm = [&](std::chrono::seconds within) {
    deadline.expires_after(within);
    deadline.async_wait([&socket](const boost::system::error_code& ec) {
      if (!ec) {
        boost::system::error_code ignore;
        socket.cancel(ignore);
      }
    });
  };

  arm(std::chrono::seconds(10));
  for (;;) {
    const auto r = tls->handshake();
    if (r.state == ws::tls_channel::status::ok) break;
    if (r.state == ws::tls_channel::status::failed) {
      log_debug() << "TLS handshake failed: " << tls->error_text();
      co_return;
    }
    if (!co_await wait_for(socket, r.state)) co_return;
  }

  std::string in;         // decrypted bytes not parsed yet
  char buffer[4 * 1024];  // in the coroutine frame while the request is read: kept small
  for (bool open = true; open;) {
    arm(std::chrono::seconds(30));
    http::request_parser<http::string_body> parser;
    parser.header_limit(max_header_bytes);
    parser.body_limit(max_body_bytes);
    parser.eager(true);
    beast::error_code ec;
    while (!parser.is_done()) {
      if (!in.empty()) {
        const std::size_t used = parser.put(asio::buffer(in), ec);
        in.erase(0, used);
        if (ec == http::error::need_more) {
          ec = {};
        } else if (ec) {
          break;
        }
        if (parser.is_done() || used > 0) continue;
      }
      const auto r = tls->read(buffer, sizeof buffer);
      if (r.state == ws::tls_channel::status::ok) {
        in.append(buffer, r.bytes);
      } else if (r.state == ws::tls_channel::status::want_read ||
                 r.state == ws::tls_channel::status::want_write) {
        if (!co_await wait_for(socket, r.state)) co_return;
      } else {
        co_return;  // the peer went away
      }
    }
    if (ec) {
      if (auto res = answer_bad_request(ec)) co_await tls_write_all(socket, *tls, serialized(*res));
      break;
    }
    auto req = parser.release();

    if (beast::websocket::is_upgrade(req) && role != http_role::metrics) {
      if (auto res = wrong_websocket_path(req)) {
        co_await tls_write_all(socket, *tls, serialized(*res));
        break;
      }
      auto reply = ws::answer_handshake(req, "parleyd");
      if (!co_await tls_write_all(socket, *tls, serialized(reply.response)) || !reply.accepted)
        break;
      deadline.cancel();
      start_websocket_session(state, connections, std::move(socket), std::move(in),
                              std::move(ticket), std::move(tls));
      co_return;
    }
    auto res = answer_request(state, req, role);
    open = res.keep_alive();
    if (!co_await tls_write_all(socket, *tls, serialized(res))) co_return;
  }
  tls->shutdown();
  socket.shutdown(tcp_socket::shutdown_send, ignored);
}

}  // namespace

void start_http_session(shared_state& state, connection_set& connections,
                        asio::ip::tcp::socket socket, admission::ticket ticket, http_role role,
                        std::unique_ptr<ws::tls_channel> tls) {
  auto ex = socket.get_executor();
  if (tls) {
    asio::co_spawn(
        ex,
        serve_tls(state, connections, std::move(socket), std::move(ticket), role, std::move(tls)),
        asio::detached);
    return;
  }
  asio::co_spawn(ex, serve(state, connections, std::move(socket), std::move(ticket), role),
                 asio::detached);
}

}  // namespace parley::server
