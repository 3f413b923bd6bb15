// What the store's writer knows about the device-queue entries it wrote and has not yet seen
// acked, so that an ack needs no lookup in the queue family: for each (device, event), the
// sender of the queued message, or 0 for a receipt (a message's event id is its message id,
// so that is all an ack needs).
//
// Bounded: past `capacity` entries the oldest are forgotten at the end of a group (trim), and
// an ack of a forgotten entry reads the store as before. Entries are never forgotten within a
// group, so every entry the running group wrote is here. The writer thread owns it; it holds
// committed entries and those of the running group, so a failed commit must clear it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <utility>

namespace parley::store {

class pending_queue {
 public:
  explicit pending_queue(std::size_t capacity) : capacity_(capacity) {}

  void add(std::uint64_t device, std::uint64_t event, std::uint64_t sender) {
    if (entries_.insert_or_assign(key{device, event}, sender).second)
      order_.push_back({device, event});
  }

  // The entry's sender (0: a receipt), removing it; nullopt if it is not known here.
  std::optional<std::uint64_t> take(std::uint64_t device, std::uint64_t event) {
    auto it = entries_.find(key{device, event});
    if (it == entries_.end()) return std::nullopt;
    const std::uint64_t sender = it->second;
    entries_.erase(it);
    return sender;
  }

  // Forgets the oldest entries beyond the capacity. The order list also sheds the keys of
  // entries already taken, so that it stays within twice the live entries (amortized O(1)).
  void trim() {
    while (entries_.size() > capacity_ && !order_.empty()) {
      entries_.erase(order_.front());
      order_.pop_front();
    }
    if (order_.size() > 2 * entries_.size() + 1024) {
      std::deque<key> live;
      for (const auto& k : order_)
        if (entries_.contains(k)) live.push_back(k);
      order_.swap(live);
    }
  }

  void clear() {
    entries_.clear();
    order_.clear();
  }

  std::size_t size() const { return entries_.size(); }
  std::size_t order_size() const { return order_.size(); }  // for tests

 private:
  using key = std::pair<std::uint64_t, std::uint64_t>;
  struct key_hash {
    std::size_t operator()(const key& k) const noexcept {
      // Event ids are Snowflakes (time in the high bits): mix both halves.
      std::uint64_t h = k.first * 0x9E3779B97F4A7C15ull ^ k.second;
      h ^= h >> 29;
      h *= 0xBF58476D1CE4E5B9ull;
      return static_cast<std::size_t>(h ^ (h >> 32));
    }
  };

  std::size_t capacity_;
  std::unordered_map<key, std::uint64_t, key_hash> entries_;
  std::deque<key> order_;  // insertion order, oldest first; may hold keys already taken
};

}  // namespace parley::store
