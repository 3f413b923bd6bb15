// RFC 6455 framing for the server side of a WebSocket: parsing the headers of the frames a
// client sends, unmasking their payloads, building the headers of the frames a server sends,
// and checking a close frame's payload. No I/O, no allocation; every byte it reads came from a
// peer, so nothing here asserts or throws on bad input (tests/fuzz/frame_codec_fuzz.cpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace parley::ws {

enum class opcode : std::uint8_t {
  continuation = 0x0,
  text = 0x1,
  binary = 0x2,
  close = 0x8,
  ping = 0x9,
  pong = 0xA,
};

// Close codes (RFC 6455 §7.4.1). The server may also send application codes 4000-4999.
enum class close_code : std::uint16_t {
  normal = 1000,
  going_away = 1001,
  protocol_error = 1002,
  unsupported_data = 1003,
  invalid_payload = 1007,  // e.g. a close reason that is not UTF-8
  policy_violation = 1008,
  message_too_big = 1009,
  internal_error = 1011,
};

inline constexpr std::size_t max_control_payload = 125;
inline constexpr std::size_t max_server_header_bytes = 10;  // 2 + 8; server frames are unmasked

struct frame_header {
  bool fin = false;
  opcode op = opcode::continuation;
  std::uint64_t payload_size = 0;
  std::size_t header_size = 0;  // bytes before the payload: 6, 8 or 14
  std::array<std::uint8_t, 4> mask{};
};

enum class parse_status {
  complete,   // the header is whole (the payload may still be arriving)
  need_more,  // `bytes` ends inside the header
  invalid,    // the connection must be closed with `error`
};

struct parse_result {
  parse_status status = parse_status::need_more;
  frame_header header;                          // when complete
  close_code error = close_code::protocol_error;  // when invalid
  const char* reason = "";                      // when invalid: text for the close frame
};

// Parses the header of one client-to-server frame at the start of `bytes`. Invalid: a reserved
// bit set (no extension is ever negotiated), an unknown opcode, an unmasked frame, a control
// frame that is fragmented or longer than 125 bytes, a 64-bit length with its top bit set, and
// a payload longer than `max_payload` (message_too_big). A length not in its shortest form is
// accepted, as RFC 6455 only asks senders to use the shortest.
parse_result parse_client_header(std::string_view bytes, std::uint64_t max_payload);

// XORs `size` bytes at `data` with `mask` (RFC 6455 §5.3), the mask starting at its byte 0.
void unmask(char* data, std::size_t size, const std::array<std::uint8_t, 4>& mask);

// Writes the header of an unmasked, final server-to-client frame; returns its size: 2, 4 or 10.
std::size_t write_server_header(opcode op, std::uint64_t payload_size,
                                std::array<char, max_server_header_bytes>& out);

// Whether a received close frame's payload is well-formed: empty, or a two-byte code a peer may
// send followed by a UTF-8 reason. `error` says which close code answers a bad one.
bool valid_close_payload(std::string_view payload, close_code& error);

// Whether `bytes` is well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF).
bool is_valid_utf8(std::string_view bytes);

}  // namespace parley::ws
