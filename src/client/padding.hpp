// The plaintext inside every Signal message: the text, then 0x80, then zeros up to a multiple
// of 160 bytes (Signal's own padding), so that the server and the wire see message sizes only
// in steps of 160 bytes.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace parley::client {

inline constexpr std::size_t padding_block = 160;

inline std::string pad(std::string_view text) {
  std::string out(text);
  out.push_back('\x80');
  out.resize((out.size() + padding_block - 1) / padding_block * padding_block, '\0');
  return out;
}

// nullopt if `padded` is not text followed by 0x80 and zeros.
inline std::optional<std::string> unpad(std::string_view padded) {
  const auto end = padded.find_last_not_of('\0');
  if (end == std::string_view::npos || padded[end] != '\x80') return std::nullopt;
  return std::string(padded.substr(0, end));
}

}  // namespace parley::client
