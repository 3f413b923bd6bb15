// parley-bench-echo: the baseline. A WebSocket echo server on the same stack as parleyd
// (Asio + Beast, C++20 coroutines, one io_context per thread, binary frames), with no
// storage, no routing and no protocol: whatever a client sends comes straight back.
// parley-bench measures it in the same run as parleyd, so that parleyd's figures can be
// given as ratios of what the stack itself does on this machine.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket.hpp>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using asio::awaitable;
constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

awaitable<void> echo(asio::ip::tcp::socket socket) {
  websocket::stream<beast::tcp_stream> ws(std::move(socket));
  ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
  ws.read_message_max(256 * 1024);
  ws.binary(true);
  auto [aec] = co_await ws.async_accept(as_tuple_awaitable);
  if (aec) co_return;
  beast::flat_buffer buffer;
  for (;;) {
    auto [rec, n] = co_await ws.async_read(buffer, as_tuple_awaitable);
    if (rec) co_return;
    auto [wec, m] = co_await ws.async_write(buffer.data(), as_tuple_awaitable);
    if (wec) co_return;
    buffer.consume(buffer.size());
  }
}

awaitable<void> accept_loop(asio::ip::tcp::acceptor& acceptor,
                            std::vector<std::unique_ptr<asio::io_context>>& contexts) {
  for (std::size_t next = 0;; ++next) {
    auto& ctx = *contexts[next % contexts.size()];
    auto [ec, socket] = co_await acceptor.async_accept(ctx, as_tuple_awaitable);
    if (ec) {
      if (!acceptor.is_open()) co_return;
      continue;
    }
    socket.set_option(asio::ip::tcp::no_delay(true));
    asio::co_spawn(ctx, echo(std::move(socket)), asio::detached);
  }
}

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  unsigned short port = 0;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--listen") {
      const std::string v = argv[i + 1];
      host = v.substr(0, v.rfind(':'));
      port = static_cast<unsigned short>(std::stoul(v.substr(v.rfind(':') + 1)));
    } else if (a == "--threads") {
      threads = static_cast<unsigned>(std::stoul(argv[i + 1]));
    }
  }
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  for (unsigned i = 0; i < threads; ++i) {
    contexts.push_back(std::make_unique<asio::io_context>(1));
    guards.emplace_back(contexts.back()->get_executor());
  }
  asio::ip::tcp::acceptor acceptor(*contexts[0], {asio::ip::make_address(host), port});
  std::printf("parley-bench-echo listening on %s:%u\n", host.c_str(),
              acceptor.local_endpoint().port());
  std::fflush(stdout);
  asio::co_spawn(*contexts[0], accept_loop(acceptor, contexts), asio::detached);
  asio::signal_set signals(*contexts[0], SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) {
    for (auto& c : contexts) c->stop();
  });
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&, i] { contexts[i]->run(); });
  contexts[0]->run();
  for (auto& t : pool) t.join();
}
