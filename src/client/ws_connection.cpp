#include "client/ws_connection.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <deque>
#include <memory>
#include <optional>
#include <type_traits>
#include <variant>

#include "common/tls_client.hpp"

namespace parley::client {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using asio::awaitable;
using boost::system::error_code;
constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

namespace {

struct ws_url {
  std::string host, port, path;
  bool tls = false;
};

// Splits `url` into `out`; returns why it cannot (empty if it can).
std::string split_ws_url(const std::string& url, ws_url& out) {
  std::string rest;
  if (url.rfind("wss://", 0) == 0) {
    out.tls = true;
    rest = url.substr(6);
  } else if (url.rfind("ws://", 0) == 0) {
    rest = url.substr(5);
  } else {
    return "the URL must start with ws:// or wss://";
  }
  const auto slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  out.path = slash == std::string::npos ? "/" : rest.substr(slash);
  if (out.path == "/") out.path = "/v2/ws";
  std::string after_host;  // ":PORT" or nothing
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string::npos) return "an IPv6 address needs its closing ']'";
    out.host = authority.substr(1, close - 1);
    after_host = authority.substr(close + 1);
    if (!after_host.empty() && after_host.front() != ':') {
      return "only :PORT may follow the ']' of an IPv6 address";
    }
  } else {
    // Two colons are an IPv6 address without its brackets: which one starts the port?
    const auto colon = authority.find(':');
    if (colon != authority.rfind(':')) {
      return "an IPv6 address is written in brackets, e.g. ws://[::1]:8080";
    }
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) after_host = authority.substr(colon);
  }
  if (out.host.empty()) return "no host";
  if (after_host.empty()) {
    out.port = out.tls ? "443" : "80";
    return {};
  }
  // Decimal only: the resolver takes a port above 65535 modulo 65536 ("70000" is 4464) and a
  // name ("http") as a service, both a connection to another port than the one written.
  out.port = after_host.substr(1);
  const bool digits = !out.port.empty() && out.port.size() <= 5 &&
                      out.port.find_first_not_of("0123456789") == std::string::npos;
  const unsigned long value = digits ? std::stoul(out.port) : 0;
  if (value == 0 || value > 65535) {
    return "the port must be a number from 1 to 65535, got '" + out.port + "'";
  }
  return {};
}

using plain_ws = websocket::stream<beast::tcp_stream>;
using tls_ws = websocket::stream<beast::ssl_stream<beast::tcp_stream>>;
// Replacing the plain stream by a TLS one (a move into the variant) cannot throw and leave the
// variant without a stream.
static_assert(std::is_nothrow_move_constructible_v<tls_ws>);

}  // namespace

bool parse_ws_url(const std::string& url, std::string& host, std::string& port, std::string& path,
                  bool& tls) {
  ws_url parts;
  if (!split_ws_url(url, parts).empty()) return false;
  host = std::move(parts.host);
  port = std::move(parts.port);
  path = std::move(parts.path);
  tls = parts.tls;
  return true;
}

std::string ws_url_problem(const std::string& url) {
  ws_url parts;
  return split_ws_url(url, parts);
}

struct ws_connection::impl {
  explicit impl(asio::any_io_executor ex)
      : executor(ex),
        ws(std::in_place_type<plain_ws>, ex),
        wake(ex, asio::steady_timer::time_point::max()) {}

  asio::any_io_executor executor;
  std::string ca_file;                            // wss://: trust only these CAs
  std::optional<asio::ssl::context> tls_context;  // wss:// only; made by connect()
  std::variant<plain_ws, tls_ws> ws;              // plain until connect() finds wss://
  beast::flat_buffer buffer;
  std::deque<std::string> outgoing;
  asio::steady_timer wake;
  bool writing_done = false;  // write loop ended
  bool closed = false;

  // Calls `f` with the WebSocket stream, plain or TLS: Beast's calls are written once, and the
  // choice is one branch.
  template <class F>
  decltype(auto) with_ws(F&& f) {
    if (auto* tls = std::get_if<tls_ws>(&ws)) return f(*tls);
    return f(*std::get_if<plain_ws>(&ws));
  }

  beast::tcp_stream& tcp() {
    return with_ws([](auto& s) -> beast::tcp_stream& { return beast::get_lowest_layer(s); });
  }

  // Replaces the plain stream by a TLS one that checks the certificate of `host`
  // (common/tls_client: TLS 1.2 or later, ca_file or the system's store, host name, SNI).
  // Before anything is connected.
  error_code make_tls_stream(const std::string& host) {
    if (auto ec = tls_client::make_context(tls_context, ca_file)) return ec;
    try {
      tls_ws stream(executor, *tls_context);
      if (auto ec = tls_client::expect_host(stream.next_layer(), host)) return ec;
      ws.emplace<tls_ws>(std::move(stream));  // a move: cannot throw (see the static_assert)
      return {};
    } catch (const boost::system::system_error& e) {  // asio's SSL_new failed
      return e.code();
    }
  }

  static awaitable<void> write_loop(std::shared_ptr<impl> self) {
    while (!self->closed) {
      if (self->outgoing.empty()) {
        self->wake.expires_at(asio::steady_timer::time_point::max());
        co_await self->wake.async_wait(as_tuple_awaitable);
        continue;
      }
      std::string next = std::move(self->outgoing.front());
      self->outgoing.pop_front();
      auto [ec, n] = co_await self->with_ws(
          [&](auto& ws) { return ws.async_write(asio::buffer(next), as_tuple_awaitable); });
      if (ec) break;
    }
    self->writing_done = true;
    self->wake.cancel();
  }
};

ws_connection::ws_connection(asio::any_io_executor executor)
    : impl_(std::make_shared<impl>(executor)) {}

ws_connection::~ws_connection() {
  impl_->closed = true;
  impl_->wake.cancel();
  beast::error_code ignored;
  impl_->tcp().socket().close(ignored);
}

void ws_connection::set_ca_file(std::string path) { impl_->ca_file = std::move(path); }

awaitable<error_code> ws_connection::connect(std::string url, std::chrono::milliseconds timeout,
                                             std::string source_address) {
  std::string host, port, path;
  bool tls = false;
  if (!parse_ws_url(url, host, port, path, tls)) co_return asio::error::invalid_argument;
  if (tls) {
    if (auto ec = impl_->make_tls_stream(host)) co_return ec;
  }
  // Name resolution within the timeout too (getaddrinfo runs on Asio's resolver thread; on
  // expiry the wait is cancelled and the lookup's late result dropped). Shared: the timer's
  // handler may run after this frame is gone.
  auto resolver = std::make_shared<asio::ip::tcp::resolver>(impl_->executor);
  auto expired = std::make_shared<bool>(false);
  asio::steady_timer resolve_deadline(impl_->executor, timeout);
  resolve_deadline.async_wait([resolver, expired](error_code ec) {
    if (ec) return;
    *expired = true;
    resolver->cancel();
  });
  auto [rec, results] = co_await resolver->async_resolve(host, port, as_tuple_awaitable);
  resolve_deadline.cancel();
  if (*expired) co_return asio::error::timed_out;
  if (rec) co_return rec;
  auto& tcp = impl_->tcp();
  tcp.expires_after(timeout);  // connecting and the TLS handshake
  if (source_address.empty()) {
    auto [cec, ep] = co_await tcp.async_connect(results, as_tuple_awaitable);
    if (cec) co_return cec;
  } else {
    // A bound socket connects to the first resolved endpoint of its own family only.
    error_code ec;
    const auto local = asio::ip::make_address(source_address, ec);
    if (ec) co_return ec;
    auto target = std::find_if(results.begin(), results.end(), [&](const auto& r) {
      return r.endpoint().address().is_v4() == local.is_v4();
    });
    if (target == results.end()) co_return asio::error::address_family_not_supported;
    tcp.socket().open(local.is_v4() ? asio::ip::tcp::v4() : asio::ip::tcp::v6(), ec);
    if (!ec) tcp.socket().bind({local, 0}, ec);
    if (ec) co_return ec;
    auto [cec] = co_await tcp.async_connect(target->endpoint(), as_tuple_awaitable);
    if (cec) co_return cec;
  }
  tcp.socket().set_option(asio::ip::tcp::no_delay(true));
  if (auto* secure = std::get_if<tls_ws>(&impl_->ws)) {
    if (auto ec = co_await tls_client::handshake(secure->next_layer())) co_return ec;
  }
  tcp.expires_never();
  auto t = websocket::stream_base::timeout::suggested(beast::role_type::client);
  t.handshake_timeout = timeout;
  const bool v6 = host.find(':') != std::string::npos;
  const std::string host_header = (v6 ? "[" + host + "]" : host) + ":" + port;
  auto [hec] = co_await impl_->with_ws([&](auto& ws) {
    ws.set_option(t);
    ws.read_message_max(max_message_bytes);
    ws.binary(true);
    return ws.async_handshake(host_header, path, as_tuple_awaitable);
  });
  if (hec) co_return hec;
  asio::co_spawn(impl_->executor, impl::write_loop(impl_), asio::detached);
  co_return error_code{};
}

void ws_connection::send(std::string bytes) {
  if (impl_->closed) return;
  impl_->outgoing.push_back(std::move(bytes));
  impl_->wake.cancel();
}

awaitable<std::pair<error_code, std::string>> ws_connection::read() {
  auto self = impl_;
  self->buffer.clear();
  auto [ec, n] = co_await self->with_ws(
      [&](auto& ws) { return ws.async_read(self->buffer, as_tuple_awaitable); });
  if (ec) co_return std::pair{ec, std::string()};
  const auto data = self->buffer.cdata();
  co_return std::pair{error_code{},
                      std::string(static_cast<const char*>(data.data()), data.size())};
}

awaitable<void> ws_connection::close(std::chrono::milliseconds timeout) {
  auto self = impl_;
  // Let the write loop flush what is queued (bounded by the timeout).
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  asio::steady_timer poll(self->executor);
  while (!self->outgoing.empty() && !self->writing_done &&
         std::chrono::steady_clock::now() < deadline) {
    poll.expires_after(std::chrono::milliseconds(2));
    co_await poll.async_wait(as_tuple_awaitable);
  }
  self->closed = true;
  self->wake.cancel();
  if (self->with_ws([](auto& ws) { return ws.is_open(); })) {
    self->tcp().expires_after(timeout);  // the close handshake and, for wss://, TLS's shutdown
    co_await self->with_ws(
        [](auto& ws) { return ws.async_close(websocket::close_code::normal, as_tuple_awaitable); });
  }
}

void ws_connection::abort() {
  impl_->closed = true;
  impl_->wake.cancel();
  beast::error_code ignored;
  impl_->tcp().socket().close(ignored);
}

}  // namespace parley::client
