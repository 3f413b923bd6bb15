// ws_connection's read limit over a real loopback socket: a test peer answers the opening
// handshake (ws::answer_upgrade, as parleyd does) and writes hand-made server frames.
#include "client/ws_connection.hpp"

#include <gtest/gtest.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/websocket/error.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "ws/frame.hpp"
#include "ws/handshake.hpp"

namespace parley::client {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::ip::tcp;
using namespace std::chrono_literals;

// One unmasked, final binary frame of `payload_bytes` bytes of 'x'.
std::string server_frame(std::size_t payload_bytes) {
  std::array<char, ws::max_server_header_bytes> header{};
  const auto n = ws::write_server_header(ws::opcode::binary, payload_bytes, header);
  std::string frame(header.data(), n);
  frame.append(payload_bytes, 'x');
  return frame;
}

// Accepts one connection, answers its handshake, writes `frames` and keeps the socket open
// until the client goes (so that what the client reads is decided by the frames alone); what
// the client wrote after the handshake lands in `received`. It reads while it writes: a client
// that stops reading in the middle of a frame still has its close frame read.
asio::awaitable<void> serve_frames(tcp::acceptor& acceptor, std::vector<std::string> frames,
                                   std::string& received) {
  auto stream =
      std::make_shared<beast::tcp_stream>(co_await acceptor.async_accept(asio::use_awaitable));
  beast::flat_buffer buffer;
  beast::http::request<beast::http::string_body> request;
  co_await beast::http::async_read(*stream, buffer, request, asio::use_awaitable);
  if (!co_await ws::answer_upgrade(*stream, buffer, request, "test")) co_return;
  asio::co_spawn(
      stream->get_executor(),
      [stream, frames = std::move(frames)]() -> asio::awaitable<void> {
        for (const auto& f : frames) {
          auto [ec, n] = co_await asio::async_write(*stream, asio::buffer(f),
                                                    asio::as_tuple(asio::use_awaitable));
          if (ec) co_return;
        }
      },
      asio::detached);
  char sink[4096];
  for (;;) {
    auto [ec, n] =
        co_await stream->async_read_some(asio::buffer(sink), asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    received.append(sink, n);
  }
}

struct read_outcome {
  boost::system::error_code ec;
  std::size_t bytes = 0;
};

struct session {
  std::vector<read_outcome> reads;
  std::string client_wrote;  // raw frames, masked
};

// Connects a ws_connection to a peer that sends `frames`, and reads as many messages.
session read_from(std::vector<std::string> frames) {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acceptor.local_endpoint().port();
  const auto count = frames.size();
  session got;
  asio::co_spawn(io, serve_frames(acceptor, std::move(frames), got.client_wrote), asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        ws_connection c(io.get_executor());
        const auto ec = co_await c.connect("ws://127.0.0.1:" + std::to_string(port) + "/v2/ws", 5s);
        if (ec) {
          got.reads.push_back({ec, 0});
          co_return;
        }
        for (std::size_t i = 0; i < count; ++i) {
          auto [rec, bytes] = co_await c.read();
          got.reads.push_back({rec, bytes.size()});
          if (rec) break;
        }
        c.abort();
      },
      asio::detached);
  io.run_for(20s);
  return got;
}

TEST(ws_client, reads_a_message_of_exactly_the_limit) {
  const auto got =
      read_from({server_frame(ws_connection::max_message_bytes), server_frame(1)}).reads;
  ASSERT_EQ(got.size(), 2u);
  EXPECT_FALSE(got[0].ec) << got[0].ec.message();
  EXPECT_EQ(got[0].bytes, 1024u * 1024u);
  EXPECT_FALSE(got[1].ec) << got[1].ec.message();
  EXPECT_EQ(got[1].bytes, 1u);
}

TEST(ws_client, a_message_over_the_limit_fails_the_read) {
  const auto s = read_from({server_frame(ws_connection::max_message_bytes + 1), server_frame(1)});
  ASSERT_FALSE(s.reads.empty());
  EXPECT_EQ(s.reads[0].ec, beast::websocket::error::message_too_big) << s.reads[0].ec.message();
  // The SDK said why: a close frame with 1009 (message too big).
  const auto h = ws::parse_client_header(s.client_wrote, 125);
  ASSERT_EQ(h.status, ws::parse_status::complete) << s.client_wrote.size();
  EXPECT_EQ(h.header.op, ws::opcode::close);
  ASSERT_GE(h.header.payload_size, 2u);
  ASSERT_GE(s.client_wrote.size(), h.header.header_size + h.header.payload_size);
  std::string payload = s.client_wrote.substr(h.header.header_size, h.header.payload_size);
  ws::unmask(payload.data(), payload.size(), h.header.mask);
  EXPECT_EQ((static_cast<unsigned char>(payload[0]) << 8) | static_cast<unsigned char>(payload[1]),
            1009);
}

}  // namespace
}  // namespace parley::client
