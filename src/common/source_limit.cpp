#include "common/source_limit.hpp"

#include <array>
#include <charconv>
#include <stdexcept>

namespace parley {
namespace {

namespace ip = boost::asio::ip;

// An IPv4-mapped IPv6 address as the IPv4 one; any other as it is.
ip::address plain(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  return a;
}

// The address's bytes, network order (the first 4 of an IPv4 address's).
std::array<unsigned char, 16> bytes_of(const ip::address& a) {
  std::array<unsigned char, 16> out{};
  if (a.is_v4()) {
    const auto b = a.to_v4().to_bytes();
    std::copy(b.begin(), b.end(), out.begin());
  } else {
    out = a.to_v6().to_bytes();
  }
  return out;
}

// Whether the first `bits` bits of a and b agree.
bool same_prefix(const std::array<unsigned char, 16>& a, const std::array<unsigned char, 16>& b,
                 unsigned bits) {
  std::size_t i = 0;
  for (; bits >= 8; bits -= 8, ++i) {
    if (a[i] != b[i]) return false;
  }
  if (bits == 0) return true;
  const auto mask = static_cast<unsigned char>(0xFF << (8 - bits));
  return (a[i] & mask) == (b[i] & mask);
}

}  // namespace

source_key source_of(const ip::address& address) {
  const auto a = plain(address);
  if (a.is_v4()) return {a.to_v4().to_uint(), false};
  const auto b = a.to_v6().to_bytes();
  std::uint64_t prefix = 0;
  for (std::size_t i = 0; i < 8; ++i) prefix = (prefix << 8) | b[i];
  return {prefix, true};
}

address_block parse_address_block(std::string_view text) {
  const auto fail = [&] {
    return std::invalid_argument("not an address block (ADDRESS or ADDRESS/PREFIX): \"" +
                                 std::string(text) + "\"");
  };
  const auto slash = text.find('/');
  boost::system::error_code ec;
  const auto network = ip::make_address(std::string(text.substr(0, slash)), ec);
  if (ec) throw fail();
  const unsigned width = network.is_v4() ? 32 : 128;
  unsigned prefix = width;
  if (slash != std::string_view::npos) {
    const auto digits = text.substr(slash + 1);
    const auto [end, err] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (digits.empty() || err != std::errc() || end != digits.data() + digits.size() ||
        prefix > width) {
      throw fail();
    }
  }
  // Bits set past the prefix ("10.0.0.1/8") are most likely a typo for another block.
  const auto b = bytes_of(network);
  for (unsigned bit = prefix; bit < width; ++bit) {
    if (b[bit / 8] & (0x80 >> (bit % 8))) throw fail();
  }
  // An IPv4-mapped block is the IPv4 block it maps, as addresses are compared (plain()).
  if (network.is_v6() && network.to_v6().is_v4_mapped() && prefix >= 96)
    return {ip::make_address_v4(ip::v4_mapped, network.to_v6()), prefix - 96};
  return {network, prefix};
}

std::vector<address_block> parse_address_blocks(const std::vector<std::string>& texts) {
  std::vector<address_block> out;
  out.reserve(texts.size());
  for (const auto& t : texts) out.push_back(parse_address_block(t));
  return out;
}

bool contains(const address_block& block, const ip::address& address) {
  const auto a = plain(address);
  if (a.is_v4() != block.network.is_v4()) return false;
  return same_prefix(bytes_of(block.network), bytes_of(a), block.prefix);
}

std::optional<source_limit::slot> source_limit::acquire(const ip::address& address) {
  if (max_ == 0) return slot();
  for (const auto& b : unlimited_) {
    if (contains(b, address)) return slot();
  }
  const auto source = source_of(address);
  std::lock_guard lock(mutex_);
  auto& n = held_[source];
  if (n >= max_) return std::nullopt;
  ++n;
  return slot(this, source);
}

void source_limit::remove(source_key source) {
  std::lock_guard lock(mutex_);
  const auto it = held_.find(source);
  if (it == held_.end()) return;
  if (--it->second == 0) held_.erase(it);
}

std::size_t source_limit::sources() const {
  std::lock_guard lock(mutex_);
  return held_.size();
}

}  // namespace parley
