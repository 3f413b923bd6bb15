// Big-endian encoding of integers, so that byte-wise key order is numeric order.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace parley {

inline void append_be64(std::string& out, std::uint64_t v) {
  char b[8];
  for (int i = 7; i >= 0; --i) {
    b[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  out.append(b, 8);
}

// Reads 8 bytes at `pos`; the caller guarantees s.size() >= pos + 8.
inline std::uint64_t read_be64(std::string_view s, std::size_t pos = 0) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<std::uint8_t>(s[pos + i]);
  return v;
}

}  // namespace parley
