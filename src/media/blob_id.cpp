// The free functions of blob_store.hpp: blob names and SHA-256 hex checks.
#include <openssl/err.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>

#include "media/blob_store.hpp"

namespace parley::media {
namespace {

constexpr std::size_t blob_id_bytes = 16;  // 128 random bits

bool lower_hex_digit(char c) noexcept { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

bool lower_hex_of_length(std::string_view s, std::size_t length) noexcept {
  return s.size() == length && std::all_of(s.begin(), s.end(), lower_hex_digit);
}

}  // namespace

bool valid_blob_id(std::string_view id) noexcept {
  return lower_hex_of_length(id, 2 * blob_id_bytes);
}

blob_id new_blob_id() {
  std::array<std::uint8_t, blob_id_bytes> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    ERR_clear_error();
    throw std::runtime_error("RAND_bytes failed: no blob id");
  }
  return to_hex(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

std::string to_hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes.size());
  for (const char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0xf]);
  }
  return out;
}

bool valid_sha256_hex(std::string_view hex) noexcept { return lower_hex_of_length(hex, 64); }

}  // namespace parley::media
