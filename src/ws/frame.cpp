#include "ws/frame.hpp"

#include <cstring>

namespace parley::ws {
namespace {

parse_result invalid(close_code code, const char* reason) {
  parse_result r;
  r.status = parse_status::invalid;
  r.error = code;
  r.reason = reason;
  return r;
}

bool is_control(std::uint8_t op) { return (op & 0x8) != 0; }

bool known_opcode(std::uint8_t op) {
  switch (static_cast<opcode>(op)) {
    case opcode::continuation:
    case opcode::text:
    case opcode::binary:
    case opcode::close:
    case opcode::ping:
    case opcode::pong:
      return true;
  }
  return false;
}

// Codes a peer may put in a close frame: the registered ones except those reserved for
// reporting (1005, 1006, 1015), and the ranges for libraries and applications.
bool sendable_close_code(std::uint16_t code) {
  if (code >= 3000 && code <= 4999) return true;
  switch (code) {
    case 1000: case 1001: case 1002: case 1003:
    case 1007: case 1008: case 1009: case 1010: case 1011:
    case 1012: case 1013: case 1014:
      return true;
    default:
      return false;
  }
}

}  // namespace

parse_result parse_client_header(std::string_view bytes, std::uint64_t max_payload) {
  parse_result r;
  if (bytes.size() < 2) return r;
  const auto b0 = static_cast<std::uint8_t>(bytes[0]);
  const auto b1 = static_cast<std::uint8_t>(bytes[1]);
  const std::uint8_t op = b0 & 0x0F;
  if ((b0 & 0x70) != 0) return invalid(close_code::protocol_error, "reserved bits set");
  if (!known_opcode(op)) return invalid(close_code::protocol_error, "unknown opcode");
  if ((b1 & 0x80) == 0) return invalid(close_code::protocol_error, "client frames must be masked");
  const bool fin = (b0 & 0x80) != 0;
  const std::uint8_t len7 = b1 & 0x7F;
  if (is_control(op)) {
    if (!fin) return invalid(close_code::protocol_error, "fragmented control frame");
    if (len7 > max_control_payload)
      return invalid(close_code::protocol_error, "control frame longer than 125 bytes");
  }

  std::size_t size_bytes = 0;
  if (len7 == 126) size_bytes = 2;
  if (len7 == 127) size_bytes = 8;
  const std::size_t header_size = 2 + size_bytes + 4;
  if (bytes.size() < header_size) return r;

  std::uint64_t payload = len7;
  if (size_bytes != 0) {
    payload = 0;
    for (std::size_t i = 0; i < size_bytes; ++i)
      payload = (payload << 8) | static_cast<std::uint8_t>(bytes[2 + i]);
    if (size_bytes == 8 && (payload >> 63) != 0)
      return invalid(close_code::protocol_error, "payload length has its top bit set");
  }
  if (payload > max_payload) return invalid(close_code::message_too_big, "message too big");

  r.status = parse_status::complete;
  r.header.fin = fin;
  r.header.op = static_cast<opcode>(op);
  r.header.payload_size = payload;
  r.header.header_size = header_size;
  std::memcpy(r.header.mask.data(), bytes.data() + 2 + size_bytes, 4);
  return r;
}

void unmask(char* data, std::size_t size, const std::array<std::uint8_t, 4>& mask) {
  // Eight bytes at a time with the mask repeated twice, then the tail byte by byte.
  std::uint64_t wide;
  std::uint8_t pattern[8];
  for (int i = 0; i < 8; ++i) pattern[i] = mask[static_cast<std::size_t>(i % 4)];
  std::memcpy(&wide, pattern, 8);
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    std::uint64_t chunk;
    std::memcpy(&chunk, data + i, 8);
    chunk ^= wide;
    std::memcpy(data + i, &chunk, 8);
  }
  for (; i < size; ++i) data[i] = static_cast<char>(data[i] ^ mask[i % 4]);
}

std::size_t write_server_header(opcode op, std::uint64_t payload_size,
                                std::array<char, max_server_header_bytes>& out) {
  out[0] = static_cast<char>(0x80 | static_cast<std::uint8_t>(op));
  if (payload_size <= 125) {
    out[1] = static_cast<char>(payload_size);
    return 2;
  }
  if (payload_size <= 0xFFFF) {
    out[1] = 126;
    out[2] = static_cast<char>(payload_size >> 8);
    out[3] = static_cast<char>(payload_size & 0xFF);
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; ++i)
    out[static_cast<std::size_t>(2 + i)] = static_cast<char>(payload_size >> (8 * (7 - i)));
  return 10;
}

bool valid_close_payload(std::string_view payload, close_code& error) {
  if (payload.empty()) return true;
  if (payload.size() == 1) {
    error = close_code::protocol_error;
    return false;
  }
  const auto code = static_cast<std::uint16_t>((static_cast<std::uint8_t>(payload[0]) << 8) |
                                               static_cast<std::uint8_t>(payload[1]));
  if (!sendable_close_code(code)) {
    error = close_code::protocol_error;
    return false;
  }
  if (!is_valid_utf8(payload.substr(2))) {
    error = close_code::invalid_payload;
    return false;
  }
  return true;
}

bool is_valid_utf8(std::string_view bytes) {
  std::size_t i = 0;
  const std::size_t n = bytes.size();
  auto at = [&](std::size_t k) { return static_cast<std::uint8_t>(bytes[k]); };
  auto continuation = [&](std::size_t k) { return k < n && (at(k) & 0xC0) == 0x80; };
  while (i < n) {
    const std::uint8_t c = at(i);
    if (c < 0x80) {
      ++i;
    } else if (c >= 0xC2 && c <= 0xDF) {
      if (!continuation(i + 1)) return false;
      i += 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      if (!continuation(i + 1) || !continuation(i + 2)) return false;
      const std::uint8_t c1 = at(i + 1);
      if (c == 0xE0 && c1 < 0xA0) return false;  // overlong
      if (c == 0xED && c1 > 0x9F) return false;  // UTF-16 surrogates
      i += 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      if (!continuation(i + 1) || !continuation(i + 2) || !continuation(i + 3)) return false;
      const std::uint8_t c1 = at(i + 1);
      if (c == 0xF0 && c1 < 0x90) return false;  // overlong
      if (c == 0xF4 && c1 > 0x8F) return false;  // past U+10FFFF
      i += 4;
    } else {
      return false;  // a continuation byte first, 0xC0/0xC1 (overlong) or 0xF5 and up
    }
  }
  return true;
}

}  // namespace parley::ws
