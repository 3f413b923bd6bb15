#include <gtest/gtest.h>

#include "client/ws_connection.hpp"

namespace parley::client {
namespace {

struct parsed {
  bool ok = false;
  std::string host, port, path;
  bool tls = false;
};

parsed parse(const std::string& url) {
  parsed p;
  p.ok = parse_ws_url(url, p.host, p.port, p.path, p.tls);
  return p;
}

// Expects `url` to be refused, with a reason that mentions `about`.
void expect_refused(const std::string& url, const std::string& about) {
  std::string host = "h", port = "p", path = "/x";
  bool tls = true;
  EXPECT_FALSE(parse_ws_url(url, host, port, path, tls)) << url;
  // Refused: the out parameters are left as they were.
  EXPECT_EQ(host, "h") << url;
  EXPECT_EQ(port, "p") << url;
  EXPECT_EQ(path, "/x") << url;
  EXPECT_TRUE(tls) << url;
  const std::string why = ws_url_problem(url);
  EXPECT_NE(why.find(about), std::string::npos) << url << ": " << why;
}

TEST(ws_url, ws_splits_host_port_and_path) {
  auto p = parse("ws://127.0.0.1:8080/v2/ws");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.host, "127.0.0.1");
  EXPECT_EQ(p.port, "8080");
  EXPECT_EQ(p.path, "/v2/ws");
  EXPECT_FALSE(p.tls);
  EXPECT_EQ(ws_url_problem("ws://127.0.0.1:8080/v2/ws"), "");

  p = parse("ws://chat.example.org:9000/other/path?x=1");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.host, "chat.example.org");
  EXPECT_EQ(p.port, "9000");
  EXPECT_EQ(p.path, "/other/path?x=1");
}

TEST(ws_url, wss_is_tls) {
  auto p = parse("wss://localhost:8443/v2/ws");
  ASSERT_TRUE(p.ok);
  EXPECT_TRUE(p.tls);
  EXPECT_EQ(p.host, "localhost");
  EXPECT_EQ(p.port, "8443");
  EXPECT_EQ(p.path, "/v2/ws");

  // A tls left true by an earlier wss:// URL is reset by a ws:// one.
  std::string host, port, path;
  bool tls = true;
  ASSERT_TRUE(parse_ws_url("ws://localhost:8080", host, port, path, tls));
  EXPECT_FALSE(tls);
}

TEST(ws_url, the_path_defaults_to_v2_ws) {
  for (const std::string url : {"ws://h:1", "ws://h:1/", "wss://h:1", "wss://h:1/"}) {
    auto p = parse(url);
    ASSERT_TRUE(p.ok) << url;
    EXPECT_EQ(p.path, "/v2/ws") << url;
  }
}

TEST(ws_url, the_port_defaults_to_80_for_ws_and_443_for_wss) {
  auto ws = parse("ws://example.org/v2/ws");
  ASSERT_TRUE(ws.ok);
  EXPECT_EQ(ws.port, "80");
  auto wss = parse("wss://example.org");
  ASSERT_TRUE(wss.ok);
  EXPECT_EQ(wss.port, "443");
  EXPECT_EQ(wss.path, "/v2/ws");
}

TEST(ws_url, ports_from_1_to_65535_are_taken_as_written) {
  for (const std::string port : {"1", "80", "443", "8080", "65535", "08080"}) {
    auto p = parse("wss://h:" + port);
    ASSERT_TRUE(p.ok) << port;
    EXPECT_EQ(p.port, port);
  }
}

TEST(ws_url, ipv6_addresses_are_written_in_brackets) {
  auto p = parse("ws://[::1]:8080/v2/ws");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.host, "::1");
  EXPECT_EQ(p.port, "8080");
  p = parse("wss://[2001:db8::7]");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.host, "2001:db8::7");
  EXPECT_EQ(p.port, "443");
  EXPECT_TRUE(p.tls);

  expect_refused("ws://::1:8080", "brackets");
  expect_refused("ws://[::1:8080", "']'");
  expect_refused("ws://[::1]8080", "']'");
  expect_refused("ws://[]:8080", "no host");
}

TEST(ws_url, other_schemes_are_refused) {
  for (const std::string url :
       {"http://h:80", "https://h:443", "wss:/h:1", "WS://h:1", "h:8080", "", "ws:", "tcp://h:1"}) {
    expect_refused(url, "ws:// or wss://");
  }
}

TEST(ws_url, a_url_without_a_host_is_refused) {
  for (const std::string url : {"ws://", "wss://", "ws://:8080", "wss:///v2/ws", "ws://:"}) {
    expect_refused(url, "no host");
  }
}

// The resolver would take a port above 65535 modulo 65536 ("70000" is 4464) and a name as a
// service: both would connect to another port than the one written.
TEST(ws_url, ports_that_are_not_1_to_65535_are_refused) {
  for (const std::string port : {"", "0", "65536", "70000", "99999999999999999999", "-80", "+80",
                                 "http", "80a", " 80", "0x50", "8080 "}) {
    for (const std::string scheme : {"ws://", "wss://"}) {
      expect_refused(scheme + "127.0.0.1:" + port + "/v2/ws",
                     "the port must be a number from 1 to 65535, got '" + port + "'");
    }
  }
  expect_refused("wss://[::1]:65536", "from 1 to 65535");
}

}  // namespace
}  // namespace parley::client
