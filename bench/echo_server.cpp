// parley-bench-echo: the baseline. A WebSocket echo server on the same stack as parleyd (Asio,
// C++20 coroutines, one io_context per thread, Beast's HTTP parser for the opening handshake
// and parleyd's ws::connection for the frames), with no storage, no routing and no protocol:
// whatever a client sends comes straight back. parley-bench measures it in the same run as
// parleyd, so that parleyd's figures can be given as ratios of what the stack itself does on
// this machine.
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
#include <boost/beast/http.hpp>
#include <cstdio>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ws/connection.hpp"
#include "ws/handshake.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

// Sends every message back. Like parleyd, it reads the next message while earlier echoes are
// being written, and drops a client that lets more than max_queued echoes pile up.
class echo_connection final : public parley::ws::connection {
 public:
  using connection::connection;

 private:
  static constexpr std::size_t max_queued = 4096;

  std::optional<awaitable<void>> on_message(std::string_view bytes) override {
    if (queued_.size() >= max_queued) {
      abort();
      return std::nullopt;
    }
    queued_.push_back(std::make_shared<const std::string>(bytes));
    wake_writer();
    return std::nullopt;
  }
  message next_outgoing() override {
    if (queued_.empty()) return nullptr;
    auto m = std::move(queued_.front());
    queued_.pop_front();
    return m;
  }
  void on_closed() override { queued_.clear(); }

  std::deque<message> queued_;
};

awaitable<void> echo(asio::ip::tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  stream.expires_after(std::chrono::seconds(30));
  beast::flat_buffer buffer;
  http::request<http::string_body> req;
  auto [rec, rn] = co_await http::async_read(stream, buffer, req, as_tuple_awaitable);
  if (rec) co_return;
  auto initial = co_await parley::ws::answer_upgrade(stream, buffer, req, "parley-bench-echo");
  if (!initial) co_return;
  stream.expires_never();
  static const parley::ws::connection_options options;
  std::make_shared<echo_connection>(stream.release_socket(), options)->start(std::move(*initial));
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
