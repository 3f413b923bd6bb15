#include "ws/handshake.hpp"

#include <gtest/gtest.h>

namespace parley::ws {
namespace {

namespace http = boost::beast::http;

http::request<http::string_body> upgrade_request() {
  http::request<http::string_body> req{http::verb::get, "/v2/ws", 11};
  req.set(http::field::host, "localhost");
  req.set(http::field::upgrade, "websocket");
  req.set(http::field::connection, "keep-alive, Upgrade");
  req.set(http::field::sec_websocket_key, "dGhlIHNhbXBsZSBub25jZQ==");
  req.set(http::field::sec_websocket_version, "13");
  return req;
}

TEST(ws_handshake, accept_key_matches_rfc_6455s_example) {
  EXPECT_EQ(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(ws_handshake, accepts_a_well_formed_request) {
  const auto reply = answer_handshake(upgrade_request(), "parleyd");
  ASSERT_TRUE(reply.accepted);
  EXPECT_EQ(reply.response.result(), http::status::switching_protocols);
  EXPECT_EQ(reply.response[http::field::sec_websocket_accept], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  EXPECT_EQ(reply.response[http::field::server], "parleyd");
  EXPECT_EQ(reply.response[http::field::sec_websocket_extensions], "");  // never agreed
}

TEST(ws_handshake, refuses_malformed_requests_with_400) {
  std::vector<std::function<void(http::request<http::string_body>&)>> breakers = {
      [](auto& r) { r.method(http::verb::post); },
      [](auto& r) { r.version(10); },
      [](auto& r) { r.erase(http::field::host); },
      [](auto& r) { r.set(http::field::connection, "keep-alive"); },
      [](auto& r) { r.set(http::field::upgrade, "h2c"); },
      [](auto& r) { r.erase(http::field::sec_websocket_key); },
      [](auto& r) { r.set(http::field::sec_websocket_key, "c2hvcnQ="); },  // 5 bytes
      [](auto& r) { r.set(http::field::sec_websocket_key, "dGhlIHNhbXBsZSBub25jZR=="); },
      [](auto& r) { r.set(http::field::sec_websocket_key, "dGhlIHNhbXBsZSBub25j*Q=="); },
  };
  for (std::size_t i = 0; i < breakers.size(); ++i) {
    auto req = upgrade_request();
    breakers[i](req);
    const auto reply = answer_handshake(req, "parleyd");
    EXPECT_FALSE(reply.accepted) << i;
    EXPECT_EQ(reply.response.result(), http::status::bad_request) << i;
    EXPECT_FALSE(reply.response.keep_alive()) << i;
  }
}

TEST(ws_handshake, asks_for_version_13_with_426) {
  auto req = upgrade_request();
  req.set(http::field::sec_websocket_version, "8");
  const auto reply = answer_handshake(req, "parleyd");
  EXPECT_FALSE(reply.accepted);
  EXPECT_EQ(reply.response.result(), http::status::upgrade_required);
  EXPECT_EQ(reply.response[http::field::sec_websocket_version], "13");
}

}  // namespace
}  // namespace parley::ws
