#include "ws/frame.hpp"

#include <gtest/gtest.h>

#include <string>

#include "ws_client_frame.hpp"

namespace parley::ws {
namespace {

using test_support::ws_client_frame;

TEST(ws_frame, parses_each_length_form_and_unmasks) {
  for (int form : {7, 16, 64}) {
    const std::string text = "hello, websocket";
    const auto f = ws_client_frame(0x82, text, form);
    const auto r = parse_client_header(f, 1 << 20);
    ASSERT_EQ(r.status, parse_status::complete) << form;
    EXPECT_TRUE(r.header.fin);
    EXPECT_EQ(r.header.op, opcode::binary);
    EXPECT_EQ(r.header.payload_size, text.size());
    EXPECT_EQ(r.header.header_size, form == 7 ? 6u : form == 16 ? 8u : 14u);
    std::string payload = f.substr(r.header.header_size);
    unmask(payload.data(), payload.size(), r.header.mask);
    EXPECT_EQ(payload, text);
  }
}

TEST(ws_frame, every_prefix_of_a_header_needs_more) {
  const auto f = ws_client_frame(0x02, std::string(300, 'x'));  // 16-bit form, not final
  for (std::size_t n = 0; n < 8; ++n)
    EXPECT_EQ(parse_client_header(std::string_view(f).substr(0, n), 1 << 20).status,
              parse_status::need_more)
        << n;
  const auto r = parse_client_header(std::string_view(f).substr(0, 8), 1 << 20);
  ASSERT_EQ(r.status, parse_status::complete);
  EXPECT_FALSE(r.header.fin);
  EXPECT_EQ(r.header.payload_size, 300u);
}

TEST(ws_frame, refuses_what_rfc_6455_forbids) {
  struct bad {
    std::string bytes;
    close_code code;
  };
  const std::string unmasked = ws_client_frame(0x82, "abc", 0, false);
  std::string huge = ws_client_frame(0x82, "", 64);
  huge[2] = static_cast<char>(0x80);  // top bit of a 64-bit length
  const bad cases[] = {
      {ws_client_frame(0xC2, "rsv1"), close_code::protocol_error},
      {ws_client_frame(0xA2, "rsv2"), close_code::protocol_error},
      {ws_client_frame(0x92, "rsv3"), close_code::protocol_error},
      {ws_client_frame(0x83, "op 3"), close_code::protocol_error},
      {ws_client_frame(0x8B, "op B"), close_code::protocol_error},
      {unmasked, close_code::protocol_error},
      {ws_client_frame(0x09, "fragmented ping"), close_code::protocol_error},
      {ws_client_frame(0x89, std::string(126, 'p')), close_code::protocol_error},
      {huge, close_code::protocol_error},
      {ws_client_frame(0x82, std::string(1001, 'b')), close_code::message_too_big},
  };
  for (const auto& c : cases) {
    const auto r = parse_client_header(c.bytes, 1000);
    EXPECT_EQ(r.status, parse_status::invalid) << static_cast<int>(c.bytes[0]);
    EXPECT_EQ(r.error, c.code) << static_cast<int>(c.bytes[0]);
    EXPECT_NE(std::string(r.reason), "");
  }
  // At the limit is fine; a 125-byte ping is fine.
  EXPECT_EQ(parse_client_header(ws_client_frame(0x82, std::string(1000, 'b')), 1000).status,
            parse_status::complete);
  EXPECT_EQ(parse_client_header(ws_client_frame(0x89, std::string(125, 'p')), 1000).status,
            parse_status::complete);
}

TEST(ws_frame, unmask_handles_every_length_and_alignment) {
  const std::array<std::uint8_t, 4> mask{0xDE, 0xAD, 0xBE, 0xEF};
  for (std::size_t offset = 0; offset < 8; ++offset) {
    for (std::size_t n = 0; n < 40; ++n) {
      std::string original;
      for (std::size_t i = 0; i < n; ++i) original.push_back(static_cast<char>(i * 7 + offset));
      std::string buffer(offset, '\0');
      buffer += original;
      unmask(buffer.data() + offset, n, mask);
      for (std::size_t i = 0; i < n; ++i)
        ASSERT_EQ(static_cast<std::uint8_t>(buffer[offset + i]),
                  static_cast<std::uint8_t>(original[i] ^ mask[i % 4]));
      unmask(buffer.data() + offset, n, mask);
      EXPECT_EQ(buffer.substr(offset), original);
    }
  }
}

TEST(ws_frame, server_headers_use_the_shortest_length_form) {
  std::array<char, max_server_header_bytes> h{};
  EXPECT_EQ(write_server_header(opcode::binary, 125, h), 2u);
  EXPECT_EQ(static_cast<std::uint8_t>(h[0]), 0x82);
  EXPECT_EQ(static_cast<std::uint8_t>(h[1]), 125);
  EXPECT_EQ(write_server_header(opcode::pong, 126, h), 4u);
  EXPECT_EQ(static_cast<std::uint8_t>(h[0]), 0x8A);
  EXPECT_EQ(static_cast<std::uint8_t>(h[1]), 126);
  EXPECT_EQ((static_cast<std::uint8_t>(h[2]) << 8) | static_cast<std::uint8_t>(h[3]), 126);
  EXPECT_EQ(write_server_header(opcode::binary, 0x10000, h), 10u);
  EXPECT_EQ(static_cast<std::uint8_t>(h[1]), 127);
  std::uint64_t n = 0;
  for (int i = 2; i < 10; ++i) n = (n << 8) | static_cast<std::uint8_t>(h[static_cast<std::size_t>(i)]);
  EXPECT_EQ(n, 0x10000u);
}

TEST(ws_frame, close_payloads) {
  close_code e = close_code::normal;
  auto payload = [](std::uint16_t code, std::string reason) {
    return std::string{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)} + reason;
  };
  EXPECT_TRUE(valid_close_payload("", e));
  for (std::uint16_t ok : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4001, 4999})
    EXPECT_TRUE(valid_close_payload(payload(ok, "bye"), e)) << ok;
  for (std::uint16_t no : {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535}) {
    EXPECT_FALSE(valid_close_payload(payload(no, ""), e)) << no;
    EXPECT_EQ(e, close_code::protocol_error);
  }
  EXPECT_FALSE(valid_close_payload("x", e));
  EXPECT_EQ(e, close_code::protocol_error);
  EXPECT_FALSE(valid_close_payload(payload(1000, "\xC3"), e));
  EXPECT_EQ(e, close_code::invalid_payload);
}

TEST(ws_frame, utf8_validation) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("plain ascii"));
  EXPECT_TRUE(is_valid_utf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"));  // é € 😀
  EXPECT_TRUE(is_valid_utf8("\xF4\x8F\xBF\xBF"));                            // U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\x80"));                  // a continuation byte first
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));              // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xE0\x80\xAF"));          // overlong, three bytes
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));          // a UTF-16 surrogate
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));      // past U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xE2\x82"));              // truncated
  EXPECT_FALSE(is_valid_utf8("\xF5\x80\x80\x80"));      // not a lead byte
}

}  // namespace
}  // namespace parley::ws
