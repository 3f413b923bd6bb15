// Builds the bytes of one client-to-server WebSocket frame by hand, including ones RFC 6455
// forbids, for the tests and the fuzz target of src/ws/.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace parley::test_support {

// `first_byte` is FIN | RSV | opcode as sent; `length_bits` picks the length form (7, 16 or
// 64; 0 = the shortest); `masked` false leaves the mask bit clear and sends no mask.
inline std::string ws_client_frame(std::uint8_t first_byte, std::string payload,
                                   int length_bits = 0, bool masked = true,
                                   std::array<std::uint8_t, 4> mask = {0x37, 0xFA, 0x21, 0x3D}) {
  std::string f;
  f.push_back(static_cast<char>(first_byte));
  const std::uint64_t n = payload.size();
  if (length_bits == 0) length_bits = n <= 125 ? 7 : n <= 0xFFFF ? 16 : 64;
  const char mask_bit = masked ? static_cast<char>(0x80) : 0;
  if (length_bits == 7) {
    f.push_back(static_cast<char>(mask_bit | static_cast<char>(n)));
  } else if (length_bits == 16) {
    f.push_back(static_cast<char>(mask_bit | 126));
    f.push_back(static_cast<char>(n >> 8));
    f.push_back(static_cast<char>(n & 0xFF));
  } else {
    f.push_back(static_cast<char>(mask_bit | 127));
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  }
  if (masked) {
    for (auto m : mask) f.push_back(static_cast<char>(m));
    for (std::size_t i = 0; i < payload.size(); ++i)
      payload[i] = static_cast<char>(payload[i] ^ mask[i % 4]);
  }
  return f + payload;
}

}  // namespace parley::test_support
