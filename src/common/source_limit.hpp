// How many connections one source holds, against a limit per source: parleyd's unauthenticated
// connections (server/admission.hpp) and the blob server's (media/local/blob_http_server), so
// that one host cannot take every slot of a shared limit and keep everybody else out.
//
// A source is an IPv4 address or an IPv6 /64 (what one host, or one customer of an ISP, is
// usually given: a host with a /64 could otherwise take a fresh address per connection).
// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4 clients) are their IPv4
// address. Sources in the unlimited blocks are not counted: a proxy in front of parleyd (all
// its clients share its address) or the machine itself.
//
// Thread-safe: one mutex around the counts (taken twice per connection: at accept, and when it
// leaves the count: authenticated or closed).
#pragma once

#include <boost/asio/ip/address.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace parley {

struct source_key {
  std::uint64_t bits = 0;  // the IPv4 address, or the IPv6 address's first 64 bits
  bool v6 = false;
  bool operator==(const source_key&) const = default;
};

[[nodiscard]] source_key source_of(const boost::asio::ip::address& address);

// A CIDR block: "10.0.0.0/8", "2001:db8::/32", or an address alone (/32 or /128).
struct address_block {
  boost::asio::ip::address network;
  unsigned prefix = 0;
};

// Throws std::invalid_argument for text that is not such a block (a prefix longer than the
// address, bits set past it, anything else).
[[nodiscard]] address_block parse_address_block(std::string_view text);
// Each of `texts` parsed (the same throws).
[[nodiscard]] std::vector<address_block> parse_address_blocks(
    const std::vector<std::string>& texts);
// Whether `address` is in `block` (an IPv4-mapped address as its IPv4 one).
[[nodiscard]] bool contains(const address_block& block, const boost::asio::ip::address& address);

class source_limit {
 public:
  // At most `max` connections per source; 0: no limit (nothing counted).
  source_limit(std::size_t max, std::vector<address_block> unlimited)
      : max_(max), unlimited_(std::move(unlimited)) {}

  // One connection's place in its source's count, given back when it is destroyed or reset
  // (an empty one holds nothing). Movable; the source_limit must outlive it.
  class slot {
   public:
    slot() = default;
    slot(slot&& o) noexcept : limit_(std::exchange(o.limit_, nullptr)), source_(o.source_) {}
    slot& operator=(slot&& o) noexcept {
      if (this != &o) {
        reset();
        limit_ = std::exchange(o.limit_, nullptr);
        source_ = o.source_;
      }
      return *this;
    }
    ~slot() { reset(); }
    void reset() {
      if (limit_ != nullptr) std::exchange(limit_, nullptr)->remove(source_);
    }

   private:
    friend class source_limit;
    slot(source_limit* limit, source_key source) : limit_(limit), source_(source) {}
    source_limit* limit_ = nullptr;
    source_key source_;
  };

  // A connection from `address`: an empty slot if it is not counted (no limit, or an
  // unlimited block), its source's slot if there is room, nullopt if its source holds `max`
  // already (the connection is refused; nothing counted).
  [[nodiscard]] std::optional<slot> acquire(const boost::asio::ip::address& address);
  // Sources holding at least one counted connection now.
  [[nodiscard]] std::size_t sources() const;

 private:
  struct key_hash {
    std::size_t operator()(const source_key& k) const {
      return std::hash<std::uint64_t>{}(k.bits ^ (k.v6 ? 0x9e3779b97f4a7c15ULL : 0));
    }
  };
  void remove(source_key source);

  const std::size_t max_;
  const std::vector<address_block> unlimited_;
  mutable std::mutex mutex_;
  std::unordered_map<source_key, std::size_t, key_hash> held_;  // guarded by mutex_
};

}  // namespace parley
