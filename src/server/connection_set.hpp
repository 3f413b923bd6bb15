// The open WebSocket connections of a server, so that shutdown can close them all and the
// memory budget can shed the ones holding the most. Thread-safe.
//
// Holds a weak reference per connection (16 bytes and a hash node: no closure per
// connection), so a connection that is gone is simply skipped.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace parley::server {

class connection_set {
 public:
  using id = std::uint64_t;

  // What a connection offers the set. Both actions must not block: they post to the
  // connection's own executor. held() may be called from any thread.
  class member {
   public:
    virtual void close_for_shutdown() = 0;  // graceful close (1001)
    virtual void shed() = 0;                // drop at once: over the memory budget
    virtual std::size_t held() const = 0;   // bytes in its buffers, as last reported

   protected:
    ~member() = default;
  };

  id add(std::weak_ptr<member> m) {
    std::lock_guard lock(mutex_);
    const id i = next_++;
    members_.emplace(i, std::move(m));
    return i;
  }
  void remove(id i) {
    std::lock_guard lock(mutex_);
    members_.erase(i);
  }
  void close_all() {
    for (auto& m : alive()) m->close_for_shutdown();
  }
  // Sheds the connections holding the most, largest first, until they held `to_free` bytes
  // together (or none is left holding anything). Returns how many it shed. O(n log n) in the
  // connections holding something; called rarely (admission rate-limits it).
  std::size_t shed_largest(std::size_t to_free) {
    std::vector<std::pair<std::size_t, std::shared_ptr<member>>> holders;
    for (auto& m : alive()) {
      if (const std::size_t held = m->held(); held > 0) holders.emplace_back(held, std::move(m));
    }
    std::sort(holders.begin(), holders.end(),
              [](const auto& a, const auto& b) { return a.first > b.first; });
    std::size_t freed = 0;
    std::size_t shed = 0;
    for (auto& [held, m] : holders) {
      if (freed >= to_free) break;
      freed += held;
      m->shed();
      ++shed;
    }
    return shed;
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return members_.size();
  }

 private:
  // The members still alive, taken under the lock and acted on outside it.
  std::vector<std::shared_ptr<member>> alive() {
    std::vector<std::shared_ptr<member>> out;
    std::lock_guard lock(mutex_);
    out.reserve(members_.size());
    for (auto& [i, m] : members_) {
      if (auto s = m.lock()) out.push_back(std::move(s));
    }
    return out;
  }

  mutable std::mutex mutex_;
  std::unordered_map<id, std::weak_ptr<member>> members_;
  id next_ = 1;
};

}  // namespace parley::server
