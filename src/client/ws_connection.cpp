#include "client/ws_connection.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket.hpp>
#include <deque>

namespace parley::client {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using asio::awaitable;
using boost::system::error_code;
constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

bool parse_ws_url(const std::string& url, std::string& host, std::string& port, std::string& path) {
  const std::string scheme = "ws://";
  if (url.rfind(scheme, 0) != 0) return false;
  std::string rest = url.substr(scheme.size());
  const auto slash = rest.find('/');
  path = slash == std::string::npos ? "/v1/ws" : rest.substr(slash);
  if (path == "/") path = "/v1/ws";
  const std::string authority = rest.substr(0, slash);
  const auto colon = authority.rfind(':');
  if (colon == std::string::npos) {
    host = authority;
    port = "80";
  } else {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return !host.empty() && !port.empty();
}

struct ws_connection::impl {
  explicit impl(asio::any_io_executor ex)
      : ws(ex), wake(ex, asio::steady_timer::time_point::max()) {}

  websocket::stream<beast::tcp_stream> ws;
  beast::flat_buffer buffer;
  std::deque<std::string> outgoing;
  asio::steady_timer wake;
  bool writing_done = false;  // write loop ended
  bool closed = false;

  static awaitable<void> write_loop(std::shared_ptr<impl> self) {
    while (!self->closed) {
      if (self->outgoing.empty()) {
        self->wake.expires_at(asio::steady_timer::time_point::max());
        co_await self->wake.async_wait(as_tuple_awaitable);
        continue;
      }
      std::string next = std::move(self->outgoing.front());
      self->outgoing.pop_front();
      auto [ec, n] = co_await self->ws.async_write(asio::buffer(next), as_tuple_awaitable);
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
  beast::get_lowest_layer(impl_->ws).socket().close(ignored);
}

awaitable<error_code> ws_connection::connect(std::string url, std::chrono::milliseconds timeout,
                                             std::string source_address) {
  std::string host, port, path;
  if (!parse_ws_url(url, host, port, path)) co_return asio::error::invalid_argument;
  asio::ip::tcp::resolver resolver(impl_->ws.get_executor());
  auto [rec, results] = co_await resolver.async_resolve(host, port, as_tuple_awaitable);
  if (rec) co_return rec;
  auto& tcp = beast::get_lowest_layer(impl_->ws);
  tcp.expires_after(timeout);
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
  tcp.expires_never();
  auto t = websocket::stream_base::timeout::suggested(beast::role_type::client);
  t.handshake_timeout = timeout;
  impl_->ws.set_option(t);
  impl_->ws.read_message_max(1024 * 1024);
  impl_->ws.binary(true);
  auto [hec] = co_await impl_->ws.async_handshake(host + ":" + port, path, as_tuple_awaitable);
  if (hec) co_return hec;
  asio::co_spawn(impl_->ws.get_executor(), impl::write_loop(impl_), asio::detached);
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
  auto [ec, n] = co_await self->ws.async_read(self->buffer, as_tuple_awaitable);
  if (ec) co_return std::pair{ec, std::string()};
  const auto data = self->buffer.cdata();
  co_return std::pair{error_code{},
                      std::string(static_cast<const char*>(data.data()), data.size())};
}

awaitable<void> ws_connection::close(std::chrono::milliseconds timeout) {
  auto self = impl_;
  // Let the write loop flush what is queued (bounded by the timeout).
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  asio::steady_timer poll(self->ws.get_executor());
  while (!self->outgoing.empty() && !self->writing_done &&
         std::chrono::steady_clock::now() < deadline) {
    poll.expires_after(std::chrono::milliseconds(2));
    co_await poll.async_wait(as_tuple_awaitable);
  }
  self->closed = true;
  self->wake.cancel();
  if (self->ws.is_open()) {
    beast::get_lowest_layer(self->ws).expires_after(timeout);
    co_await self->ws.async_close(websocket::close_code::normal, as_tuple_awaitable);
  }
}

void ws_connection::abort() {
  impl_->closed = true;
  impl_->wake.cancel();
  beast::error_code ignored;
  beast::get_lowest_layer(impl_->ws).socket().close(ignored);
}

}  // namespace parley::client
