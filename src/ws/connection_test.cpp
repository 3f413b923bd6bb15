// ws::connection over real loopback sockets: a test peer writes hand-made frames (valid and
// not) with a blocking socket and reads what the server answers; Beast's own client checks
// interoperation.
#include "ws/connection.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include "ws/handshake.hpp"
#include "ws_client_frame.hpp"

namespace parley::ws {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;
using test_support::ws_client_frame;

// Echoes every message; optionally after yielding to the executor, so that other connections on
// the thread read (and reuse the thread's buffer) while this one's handling is unfinished.
class echo_connection final : public connection {
 public:
  echo_connection(socket_type s, const connection_options& o, bool yield,
                  std::vector<std::string>& handled)
      : connection(std::move(s), o), yield_(yield), handled_(handled) {}

  void queue(std::string m) {
    out_.push_back(std::make_shared<const std::string>(std::move(m)));
    wake_writer();
  }

  std::atomic<int> closed_calls{0};
  std::atomic<int> close_received_calls{0};

 private:
  std::optional<asio::awaitable<void>> on_message(std::string_view bytes) override {
    std::string copy(bytes);  // the bytes are valid only during this call
    handled_.push_back(copy.substr(0, copy.find('|')));  // the label before any '|'
    if (copy == "throw") throw std::runtime_error("a hook failed");
    if (copy == "throw later") return fail_later();
    if (copy.starts_with("slow")) return echo_later(std::move(copy));
    if (copy.starts_with("at once")) return echo_at_once(std::move(copy));
    if (yield_) return echo_later(std::move(copy));
    queue(std::move(copy));
    return std::nullopt;
  }
  // The rest of a message's handling, after the thread has run other work (and other
  // connections have read into the thread's buffer).
  asio::awaitable<void> echo_later(std::string m) {
    co_await asio::post(executor(), asio::use_awaitable);
    queue(std::move(m));
  }
  // A rest that completes without suspending.
  asio::awaitable<void> echo_at_once(std::string m) {
    queue(std::move(m));
    co_return;
  }
  asio::awaitable<void> fail_later() {
    co_await asio::post(executor(), asio::use_awaitable);
    throw std::runtime_error("a message's rest failed");
  }
  message next_outgoing() override {
    if (out_.empty()) return nullptr;
    auto m = std::move(out_.front());
    out_.pop_front();
    return m;
  }
  void on_closed() override { closed_calls.fetch_add(1); }
  void on_close_received() override { close_received_calls.fetch_add(1); }

  bool yield_;
  std::vector<std::string>& handled_;  // every connection's messages, in the order handled
  std::deque<message> out_;
};

// A server thread that turns each accepted socket into an echo_connection.
class echo_server {
 public:
  explicit echo_server(connection_options options = small_options(), bool yield = false,
                       bool handshake = false,
                       std::chrono::milliseconds start_delay = std::chrono::milliseconds(0))
      : acceptor_(io_, {asio::ip::make_address("127.0.0.1"), 0}),
        options_(options),
        yield_(yield),
        handshake_(handshake),
        start_delay_(start_delay) {
    accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~echo_server() {
    asio::post(io_, [this] {
      acceptor_.close();
      for (auto& c : connections_) c->abort();
    });
    work_.reset();
    thread_.join();
  }

  static connection_options small_options() {
    connection_options o;
    o.max_message_bytes = 256 * 1024;
    o.close_timeout = 300ms;
    return o;
  }

  tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }

  // Runs `fn` on the server thread with the n-th accepted connection and returns its result.
  template <class Fn>
  auto on_connection(std::size_t n, Fn fn) {
    std::promise<decltype(fn(std::declval<echo_connection&>()))> done;
    auto result = done.get_future();
    asio::post(io_, [&] {
      if constexpr (std::is_void_v<decltype(fn(std::declval<echo_connection&>()))>) {
        fn(*connections_.at(n));
        done.set_value();
      } else {
        done.set_value(fn(*connections_.at(n)));
      }
    });
    return result.get();
  }

  // The messages handled so far, by every connection, in order, each cut at its first '|'.
  std::vector<std::string> handled() {
    std::promise<std::vector<std::string>> done;
    auto result = done.get_future();
    asio::post(io_, [&] { done.set_value(handled_); });
    return result.get();
  }

  // Holds the server's thread until the returned object goes.
  std::shared_ptr<void> hold() {
    auto release = std::make_shared<std::promise<void>>();
    auto held = std::make_shared<std::promise<void>>();
    asio::post(io_, [wait = release->get_future().share(), held] {
      held->set_value();
      wait.wait();
    });
    held->get_future().wait();
    return std::shared_ptr<void>(nullptr, [release](void*) { release->set_value(); });
  }

  // The n-th connection's buffered_bytes().
  std::size_t buffered(std::size_t n) {
    return on_connection(n, [](echo_connection& c) { return c.buffered_bytes(); });
  }

  // Waits up to two seconds for the n-th connection to hold bytes of its own (e.g. a batch's
  // rest while its socket is full); returns what it holds then.
  std::size_t wait_until_holding(std::size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    std::size_t held = 0;
    while ((held = buffered(n)) == 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(1ms);
    return held;
  }

  // Waits up to two seconds for the n-th connection's on_closed(); false if it was not called
  // exactly once.
  bool closed(std::size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    int calls = 0;
    while ((calls = on_connection(n, [](echo_connection& c) { return c.closed_calls.load(); })) ==
               0 &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(1ms);
    return calls == 1;
  }

 private:
  void accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      if (handshake_) {
        asio::co_spawn(io_, answer_then_start(std::move(s)), asio::detached);
      } else if (start_delay_.count() > 0) {
        // The socket sits accepted (and registered with the reactor) while the peer's first
        // frame arrives; start() comes after.
        auto timer = std::make_shared<asio::steady_timer>(io_, start_delay_);
        auto socket = std::make_shared<tcp::socket>(std::move(s));
        timer->async_wait(
            [this, timer, socket](boost::system::error_code) { start(std::move(*socket), {}); });
      } else {
        start(std::move(s), {});
      }
      accept();
    });
  }

  void start(tcp::socket s, std::string initial) {
    auto c = std::make_shared<echo_connection>(std::move(s), options_, yield_, handled_);
    connections_.push_back(c);
    c->start(std::move(initial));
  }

  // The opening handshake as parleyd's http_session answers it.
  asio::awaitable<void> answer_then_start(tcp::socket s) {
    namespace http = boost::beast::http;
    boost::beast::tcp_stream stream(std::move(s));
    boost::beast::flat_buffer buffer;
    http::request<http::string_body> req;
    co_await http::async_read(stream, buffer, req, asio::use_awaitable);
    auto initial = co_await answer_upgrade(stream, buffer, req, "test");
    if (!initial) co_return;
    start(stream.release_socket(), std::move(*initial));
  }

  asio::io_context io_{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{
      io_.get_executor()};
  tcp::acceptor acceptor_;
  connection_options options_;
  bool yield_;
  bool handshake_;
  std::chrono::milliseconds start_delay_;
  std::vector<std::string> handled_;
  std::vector<std::shared_ptr<echo_connection>> connections_;
  std::thread thread_;
};

struct received_frame {
  std::uint8_t first_byte = 0;
  std::string payload;
  std::uint8_t op() const { return first_byte & 0x0F; }
  std::uint16_t close_code() const {
    return payload.size() < 2
               ? 0
               : static_cast<std::uint16_t>((static_cast<std::uint8_t>(payload[0]) << 8) |
                                            static_cast<std::uint8_t>(payload[1]));
  }
};

// The client end: a blocking socket whose reads time out after two seconds.
class raw_peer {
 public:
  explicit raw_peer(const tcp::endpoint& server, int send_buffer = 0, int receive_buffer = 0)
      : socket_(io_) {
    socket_.open(tcp::v4());
    if (send_buffer > 0) socket_.set_option(asio::socket_base::send_buffer_size(send_buffer));
    if (receive_buffer > 0)
      socket_.set_option(asio::socket_base::receive_buffer_size(receive_buffer));
    socket_.connect(server);
    socket_.set_option(tcp::no_delay(true));
    timeval tv{2, 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }

  void send(const std::string& bytes) { asio::write(socket_, asio::buffer(bytes)); }

  // The next frame, or nullopt on end of stream or timeout.
  std::optional<received_frame> read_frame() {
    std::array<std::uint8_t, 2> h{};
    if (!read_exactly(h.data(), 2)) return std::nullopt;
    received_frame f;
    f.first_byte = h[0];
    EXPECT_EQ(h[1] & 0x80, 0) << "server frames are never masked";
    std::uint64_t n = h[1] & 0x7F;
    if (n >= 126) {
      std::array<std::uint8_t, 8> ext{};
      const std::size_t bytes = n == 126 ? 2 : 8;
      if (!read_exactly(ext.data(), bytes)) return std::nullopt;
      n = 0;
      for (std::size_t i = 0; i < bytes; ++i) n = (n << 8) | ext[i];
    }
    f.payload.resize(static_cast<std::size_t>(n));
    if (n > 0 && !read_exactly(f.payload.data(), f.payload.size())) return std::nullopt;
    return f;
  }

  void shutdown_send() { socket_.shutdown(tcp::socket::shutdown_send); }

  // True if the server ends the TCP stream (rather than the read timing out).
  bool sees_end_of_stream() {
    char c;
    boost::system::error_code ec;
    socket_.read_some(asio::buffer(&c, 1), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

 private:
  bool read_exactly(void* data, std::size_t n) {
    boost::system::error_code ec;
    asio::read(socket_, asio::buffer(data, n), ec);
    return !ec;
  }

  asio::io_context io_;
  tcp::socket socket_;
};

std::string close_payload(std::uint16_t code, const std::string& reason = "") {
  return std::string{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)} + reason;
}

// Expects a close frame with `code`, then the end of the TCP stream.
void expect_closed_with(raw_peer& peer, std::uint16_t code) {
  auto f = peer.read_frame();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->op(), 0x8);
  EXPECT_EQ(f->close_code(), code);
  EXPECT_TRUE(peer.sees_end_of_stream());
}

TEST(ws_connection, echoes_a_message_that_arrives_one_byte_at_a_time) {
  echo_server server;
  raw_peer peer(server.endpoint());
  const auto frame = ws_client_frame(0x82, "split into single bytes");
  for (char c : frame) {
    peer.send(std::string(1, c));
    std::this_thread::sleep_for(1ms);
  }
  auto f = peer.read_frame();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->first_byte, 0x82);
  EXPECT_EQ(f->payload, "split into single bytes");
}

TEST(ws_connection, reads_a_frame_that_arrived_before_start) {
  echo_server server(echo_server::small_options(), false, false, 200ms);
  raw_peer peer(server.endpoint());
  peer.send(ws_client_frame(0x82, "early bird"));  // before the server calls start()
  auto f = peer.read_frame();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->payload, "early bird");
}

TEST(ws_connection, echoes_pipelined_and_large_messages_in_order) {
  echo_server server;
  raw_peer peer(server.endpoint());
  std::string burst;
  for (int i = 0; i < 500; ++i) burst += ws_client_frame(0x82, "message " + std::to_string(i));
  std::string large(200 * 1024, '\0');
  for (std::size_t i = 0; i < large.size(); ++i) large[i] = static_cast<char>(i * 31);
  burst += ws_client_frame(0x82, large);
  peer.send(burst);
  for (int i = 0; i < 500; ++i) {
    auto f = peer.read_frame();
    ASSERT_TRUE(f) << i;
    EXPECT_EQ(f->payload, "message " + std::to_string(i));
  }
  auto f = peer.read_frame();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->payload, large);
  // Handled: the connection keeps no buffer of its own.
  EXPECT_EQ(server.buffered(0), 0u);
}

TEST(ws_connection, a_full_socket_keeps_the_batchs_rest_and_resumes_where_it_stopped) {
  auto options = echo_server::small_options();
  options.close_timeout = 20s;  // the close below waits behind 8 MiB through a small window
  echo_server server(options);
  raw_peer peer(server.endpoint(), 0, 16 * 1024);  // a small window: the server's writes block
  peer.send(ws_client_frame(0x82, "start"));
  ASSERT_EQ(peer.read_frame()->payload, "start");
  // Small kernel buffers on the server's side too, whatever the host's tcp_wmem.
  server.on_connection(0, [](echo_connection& c) {
    c.socket().set_option(asio::socket_base::send_buffer_size(16 * 1024));
  });
  // 8 MiB queued while the peer reads nothing: far more than the socket buffers take.
  auto body = [](int i) {
    std::string m(128 * 1024, '\0');
    for (std::size_t j = 0; j < m.size(); ++j) m[j] = static_cast<char>(i * 7 + j * 13);
    return m;
  };
  server.on_connection(0, [&](echo_connection& c) {
    for (int i = 0; i < 64; ++i) c.queue(body(i));
  });
  EXPECT_GT(server.wait_until_holding(0), 0u) << "the writer never found the socket full";
  // Queued while the writer waits for room, and a close: both go out after the rest, in order.
  server.on_connection(0, [&](echo_connection& c) {
    c.queue("last");
    c.close(close_code::going_away, "done");
  });
  for (int i = 0; i < 64; ++i) {
    auto f = peer.read_frame();
    ASSERT_TRUE(f) << i;
    ASSERT_EQ(f->payload, body(i)) << i;
  }
  EXPECT_EQ(peer.read_frame()->payload, "last");
  auto f = peer.read_frame();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->close_code(), 1001);
  EXPECT_EQ(server.buffered(0), 0u);
  peer.send(ws_client_frame(0x88, close_payload(1001)));
  EXPECT_TRUE(peer.sees_end_of_stream());
  EXPECT_TRUE(server.closed(0));
}

TEST(ws_connection, an_abort_while_the_socket_is_full_releases_the_batchs_rest) {
  echo_server server;
  raw_peer peer(server.endpoint(), 0, 16 * 1024);
  peer.send(ws_client_frame(0x82, "start"));
  ASSERT_EQ(peer.read_frame()->payload, "start");
  server.on_connection(0, [](echo_connection& c) {
    c.socket().set_option(asio::socket_base::send_buffer_size(16 * 1024));
    for (int i = 0; i < 16; ++i) c.queue(std::string(256 * 1024, 'x'));
  });
  ASSERT_GT(server.wait_until_holding(0), 0u);
  server.on_connection(0, [](echo_connection& c) { c.abort(); });
  EXPECT_TRUE(server.closed(0));
  EXPECT_EQ(server.buffered(0), 0u) << "the unwritten rest went with the connection's end";
}

TEST(ws_connection, assembles_fragments_and_answers_a_ping_between_them) {
  echo_server server;
  raw_peer peer(server.endpoint());
  peer.send(ws_client_frame(0x02, "frag") + ws_client_frame(0x89, "are you there?") +
            ws_client_frame(0x00, "mented ") + ws_client_frame(0x80, "message"));
  auto pong = peer.read_frame();
  ASSERT_TRUE(pong);
  EXPECT_EQ(pong->first_byte, 0x8A);
  EXPECT_EQ(pong->payload, "are you there?");
  auto f = peer.read_frame();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->payload, "fragmented message");
  EXPECT_EQ(server.buffered(0), 0u);
}

TEST(ws_connection, handling_that_finishes_later_keeps_the_unread_bytes_while_others_read) {
  echo_server server(echo_server::small_options(), /*yield=*/true);
  raw_peer a(server.endpoint());
  raw_peer b(server.endpoint());
  std::string burst_a, burst_b;
  for (int i = 0; i < 300; ++i) {
    burst_a += ws_client_frame(0x82, "a" + std::to_string(i) + std::string(50, 'A'));
    burst_b += ws_client_frame(0x82, "b" + std::to_string(i) + std::string(70, 'B'));
  }
  a.send(burst_a);
  b.send(burst_b);
  for (int i = 0; i < 300; ++i) {
    auto fa = a.read_frame();
    auto fb = b.read_frame();
    ASSERT_TRUE(fa && fb) << i;
    EXPECT_EQ(fa->payload, "a" + std::to_string(i) + std::string(50, 'A'));
    EXPECT_EQ(fb->payload, "b" + std::to_string(i) + std::string(70, 'B'));
  }
}

// A message whose handling goes on after on_message returned holds up the messages behind it,
// even those handled at once: their echoes may not overtake its echo.
TEST(ws_connection, a_message_handled_later_holds_back_the_ones_behind_it) {
  echo_server server;
  raw_peer peer(server.endpoint());
  peer.send(ws_client_frame(0x82, "slow|1") + ws_client_frame(0x82, "fast|2") +
            ws_client_frame(0x82, "slow|3") + ws_client_frame(0x82, "fast|4"));
  for (const char* expected : {"slow|1", "fast|2", "slow|3", "fast|4"}) {
    auto f = peer.read_frame();
    ASSERT_TRUE(f) << expected;
    EXPECT_EQ(f->payload, expected);
  }
}

// Rests that complete without suspending, many in one buffer: each resumes reading from the
// thread's queue, not from inside the one before (which would nest a read loop per message
// and run out of stack).
TEST(ws_connection, many_rests_that_complete_at_once_do_not_nest) {
  echo_server server;
  raw_peer peer(server.endpoint());
  constexpr int count = 20'000;
  std::string burst;
  for (int i = 0; i < count; ++i) burst += ws_client_frame(0x82, "at once " + std::to_string(i));
  std::thread writer([&] { peer.send(burst); });  // the echoes come back while it writes
  int echoed = 0;
  for (; echoed < count; ++echoed) {
    auto f = peer.read_frame();
    if (!f || f->payload != "at once " + std::to_string(echoed)) break;
  }
  writer.join();
  EXPECT_EQ(echoed, count);
}

// What a hook throws, while handling a message or in the rest it returned, drops that
// connection (no close handshake: the server cannot tell what state the hook left) and nothing
// else: the thread goes on serving the other connections.
TEST(ws_connection, a_hook_that_throws_drops_only_its_own_connection) {
  echo_server server;
  raw_peer now(server.endpoint());
  raw_peer later(server.endpoint());
  raw_peer bystander(server.endpoint());
  now.send(ws_client_frame(0x82, "throw") + ws_client_frame(0x82, "never echoed"));
  later.send(ws_client_frame(0x82, "throw later") + ws_client_frame(0x82, "never echoed"));
  EXPECT_FALSE(now.read_frame());
  EXPECT_FALSE(later.read_frame());
  EXPECT_TRUE(server.closed(0));
  EXPECT_TRUE(server.closed(1));
  bystander.send(ws_client_frame(0x82, "still served"));
  auto f = bystander.read_frame();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->payload, "still served");
}

TEST(ws_connection, a_busy_peer_yields_to_the_others_after_reads_per_turn) {
  connection_options o = echo_server::small_options();
  o.reads_per_turn = 1;  // yield after every read of up to 64 KiB
  echo_server server(o);
  raw_peer flooder(server.endpoint(), 1 << 20);
  raw_peer other(server.endpoint());
  flooder.send(ws_client_frame(0x82, "hello"));
  ASSERT_TRUE(flooder.read_frame());
  other.send(ws_client_frame(0x82, "hello"));
  ASSERT_TRUE(other.read_frame());
  server.on_connection(0, [](echo_connection& c) {
    const asio::socket_base::receive_buffer_size big(1 << 20);
    c.socket().set_option(big);
  });

  // While the server's thread is held, 256 KB for the flooder (four reads' worth) and one
  // message from the other peer wait in the kernel; then both become readable at once.
  std::string flood;
  for (int i = 0; flood.size() < 256 * 1024; ++i)
    flood += ws_client_frame(0x82, "flood " + std::to_string(i) + "|" + std::string(100, 'f'));
  const std::size_t flood_messages = [&] {
    std::size_t n = 0;
    for (std::size_t pos = 0; pos < flood.size(); ++n)
      pos += 2 + 4 + static_cast<std::uint8_t>(flood[pos + 1] & 0x7F);
    return n;
  }();
  {
    auto hold = server.hold();
    flooder.send(flood);  // fits in the two sockets' buffers (1 MiB each side)
    other.send(ws_client_frame(0x82, "still served"));
    std::this_thread::sleep_for(50ms);
  }
  auto f = other.read_frame();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->payload, "still served");
  for (std::size_t i = 0; i < flood_messages; ++i) ASSERT_TRUE(flooder.read_frame()) << i;

  // The other peer's message was handled before the flooder's backlog was through.
  const auto order = server.handled();
  const auto served = std::find(order.begin(), order.end(), "still served");
  ASSERT_NE(served, order.end());
  const auto last_flood =
      std::find(order.begin(), order.end(), "flood " + std::to_string(flood_messages - 1));
  ASSERT_NE(last_flood, order.end());
  EXPECT_LT(served - order.begin(), last_flood - order.begin())
      << "the other peer waited behind all " << flood_messages << " flood messages";
}

TEST(ws_connection, refuses_bad_frames_with_the_right_close_code) {
  struct bad_input {
    std::string bytes;
    std::uint16_t code;
  };
  const bad_input cases[] = {
      {ws_client_frame(0x82, "unmasked", 0, false), 1002},
      {ws_client_frame(0xC2, "rsv1"), 1002},
      {ws_client_frame(0x81, "text"), 1003},
      {ws_client_frame(0x80, "continuation first"), 1002},
      {ws_client_frame(0x02, "open") + ws_client_frame(0x82, "new message inside"), 1002},
      {ws_client_frame(0x82, std::string(256 * 1024 + 1, 'x')), 1009},
      {ws_client_frame(0x02, std::string(200 * 1024, 'x')) +
           ws_client_frame(0x80, std::string(100 * 1024, 'y')),
       1009},
      {ws_client_frame(0x88, "x"), 1002},
      {ws_client_frame(0x88, close_payload(1005)), 1002},
      {ws_client_frame(0x88, close_payload(1000, "\xC3")), 1007},
  };
  echo_server server;
  for (std::size_t i = 0; i < std::size(cases); ++i) {
    SCOPED_TRACE(i);
    raw_peer peer(server.endpoint());
    peer.send(cases[i].bytes);
    expect_closed_with(peer, cases[i].code);
    EXPECT_TRUE(server.closed(i));
  }
}

TEST(ws_connection, sets_tcp_keepalive_and_user_timeout_to_find_dead_peers) {
  connection_options o = echo_server::small_options();
  o.keepalive_idle = 42s;
  o.keepalive_interval = 7s;
  o.keepalive_probes = 3;
  o.user_timeout = 99s;
  echo_server server(o);
  raw_peer peer(server.endpoint());
  peer.send(ws_client_frame(0x82, "hello"));
  ASSERT_TRUE(peer.read_frame());
  auto option = [&](int level, int name) {
    return server.on_connection(0, [=](echo_connection& c) {
      int value = -1;
      socklen_t size = sizeof value;
      ::getsockopt(c.socket().native_handle(), level, name, &value, &size);
      return value;
    });
  };
  EXPECT_EQ(option(SOL_SOCKET, SO_KEEPALIVE), 1);
  EXPECT_EQ(option(IPPROTO_TCP, TCP_KEEPIDLE), 42);
  EXPECT_EQ(option(IPPROTO_TCP, TCP_KEEPINTVL), 7);
  EXPECT_EQ(option(IPPROTO_TCP, TCP_KEEPCNT), 3);
  EXPECT_EQ(option(IPPROTO_TCP, TCP_USER_TIMEOUT), 99'000);
  EXPECT_EQ(option(IPPROTO_TCP, TCP_NODELAY), 1);
}

TEST(ws_connection, a_peer_that_stops_half_way_through_a_message_is_closed) {
  connection_options o = echo_server::small_options();
  o.message_timeout = 600ms;
  echo_server server(o);
  raw_peer peer(server.endpoint());
  peer.send(ws_client_frame(0x82, "hello"));  // the connection exists before it is asked about
  ASSERT_TRUE(peer.read_frame());
  const auto frame = ws_client_frame(0x82, std::string(1000, 'x'));
  peer.send(frame.substr(0, 500));  // and nothing more
  EXPECT_GT(server.wait_until_holding(0), 0u);
  expect_closed_with(peer, 1008);
  EXPECT_TRUE(server.closed(0));
}

TEST(ws_connection, a_busy_stream_whose_reads_end_mid_frame_is_not_cut_off) {
  connection_options o = echo_server::small_options();
  o.message_timeout = 1s;
  echo_server server(o);
  raw_peer peer(server.endpoint());
  // Every write completes the previous message and starts the next, so the server always
  // holds a partial message, for 1.5 s in all (past the timeout); but each is complete
  // within 100 ms.
  std::string pending;
  for (int i = 0; i < 15; ++i) {
    const auto frame = ws_client_frame(0x82, "part " + std::to_string(i));
    peer.send(pending + frame.substr(0, 4));
    pending = frame.substr(4);
    std::this_thread::sleep_for(100ms);
  }
  peer.send(pending);
  for (int i = 0; i < 15; ++i) {
    auto f = peer.read_frame();
    ASSERT_TRUE(f) << i;
    ASSERT_EQ(f->first_byte, 0x82) << i << ": closed with " << f->close_code();
    EXPECT_EQ(f->payload, "part " + std::to_string(i));
  }
  EXPECT_EQ(server.buffered(0), 0u);
}

TEST(ws_connection, a_close_followed_at_once_by_the_peers_fin_ends_without_waiting) {
  connection_options o = echo_server::small_options();
  o.close_timeout = 5s;
  echo_server server(o);
  raw_peer peer(server.endpoint());
  peer.send(ws_client_frame(0x82, "hello"));
  ASSERT_TRUE(peer.read_frame());
  const auto start = std::chrono::steady_clock::now();
  peer.send(ws_client_frame(0x88, close_payload(1000)));
  peer.shutdown_send();  // the FIN follows the close frame at once
  expect_closed_with(peer, 1000);
  EXPECT_TRUE(server.closed(0));
  // Well before the close timeout: the server saw the FIN that came with the close frame.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST(ws_connection, echoes_the_peers_close_and_hangs_up) {
  echo_server server;
  raw_peer peer(server.endpoint());
  peer.send(ws_client_frame(0x82, "last words") +
            ws_client_frame(0x88, close_payload(1000, "bye")));
  auto f = peer.read_frame();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->payload, "last words");
  expect_closed_with(peer, 1000);
  EXPECT_EQ(
      server.on_connection(0, [](echo_connection& c) { return c.close_received_calls.load(); }), 1)
      << "the hook that stops the producer ran once";
}

TEST(ws_connection, its_own_close_flushes_the_queue_first_and_completes_the_handshake) {
  echo_server server;
  raw_peer peer(server.endpoint());
  peer.send(ws_client_frame(0x82, "hello"));
  ASSERT_TRUE(peer.read_frame());
  server.on_connection(0, [](echo_connection& c) {
    c.queue("one");
    c.queue("two");
    c.close(close_code::going_away, "shutting down");
  });
  EXPECT_EQ(peer.read_frame()->payload, "one");
  EXPECT_EQ(peer.read_frame()->payload, "two");
  auto f = peer.read_frame();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->close_code(), 1001);
  EXPECT_EQ(f->payload.substr(2), "shutting down");
  peer.send(ws_client_frame(0x88, close_payload(1001)));
  EXPECT_TRUE(peer.sees_end_of_stream());
  EXPECT_TRUE(server.closed(0));
}

TEST(ws_connection, a_peer_that_never_answers_the_close_is_dropped_after_the_timeout) {
  echo_server server;  // close_timeout 300 ms
  raw_peer peer(server.endpoint());
  peer.send(ws_client_frame(0x82, "hello"));
  ASSERT_TRUE(peer.read_frame());
  const auto start = std::chrono::steady_clock::now();
  server.on_connection(0, [](echo_connection& c) { c.close(close_code::normal, ""); });
  auto f = peer.read_frame();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->close_code(), 1000);
  EXPECT_TRUE(peer.sees_end_of_stream());  // within the read timeout of 2 s
  EXPECT_GE(std::chrono::steady_clock::now() - start, 250ms);
}

TEST(ws_connection, interoperates_with_beasts_client) {
  namespace beast = boost::beast;
  namespace websocket = beast::websocket;
  echo_server server(echo_server::small_options(), false, /*handshake=*/true);
  asio::io_context io;
  websocket::stream<tcp::socket> ws(io);
  ws.next_layer().connect(server.endpoint());
  ws.handshake("localhost", "/");
  // Beast's client masks, and fragments messages larger than its write buffer.
  ws.binary(true);
  ws.auto_fragment(true);
  ws.write_buffer_bytes(4096);
  std::string pong;
  ws.control_callback([&](websocket::frame_type kind, beast::string_view payload) {
    if (kind == websocket::frame_type::pong) pong = std::string(payload);
  });
  ws.ping("beat");
  std::string big(100 * 1024, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 13);
  ws.write(asio::buffer(big));
  beast::flat_buffer buffer;
  ws.read(buffer);
  EXPECT_EQ(pong, "beat");
  EXPECT_EQ(beast::buffers_to_string(buffer.data()), big);
  ws.close(websocket::close_code::normal);  // returns once the close handshake is done
  EXPECT_EQ(ws.reason().code, websocket::close_code::normal);
}

}  // namespace
}  // namespace parley::ws
