// The open connections of a server, so that shutdown can close them all and the memory
// budget can shed the ones holding the most. Thread-safe.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace parley::server {

class connection_set {
 public:
  using id = std::uint64_t;

  struct entry {
    std::function<void()> close;  // graceful close; must not block (posts to the executor)
    std::function<void()> shed;   // drops the connection at once; must not block either
    // Bytes the connection holds in its buffers, kept up to date by the connection. Must
    // stay valid until remove().
    const std::atomic<std::size_t>* held = nullptr;
  };

  id add(entry e) {
    std::lock_guard lock(mutex_);
    const id i = next_++;
    entries_.emplace(i, std::move(e));
    return i;
  }
  void remove(id i) {
    std::lock_guard lock(mutex_);
    entries_.erase(i);
  }
  void close_all() {
    std::vector<std::function<void()>> all;
    {
      std::lock_guard lock(mutex_);
      for (auto& [i, e] : entries_) all.push_back(e.close);
    }
    for (auto& c : all) c();
  }
  // Sheds the connections holding the most, largest first, until they held `to_free` bytes
  // together (or none is left holding anything). Returns how many it shed. O(n log n) in the
  // connections holding something; called rarely (memory_budget rate-limits it).
  std::size_t shed_largest(std::size_t to_free) {
    std::vector<std::pair<std::size_t, std::function<void()>>> victims;
    {
      std::lock_guard lock(mutex_);
      std::vector<std::pair<std::size_t, id>> holders;
      for (auto& [i, e] : entries_) {
        const std::size_t held = e.held ? e.held->load(std::memory_order_relaxed) : 0;
        if (held > 0) holders.emplace_back(held, i);
      }
      std::sort(holders.begin(), holders.end(), std::greater<>());
      std::size_t freed = 0;
      for (auto& [held, i] : holders) {
        if (freed >= to_free) break;
        freed += held;
        victims.emplace_back(held, entries_.at(i).shed);
      }
    }
    for (auto& [held, shed] : victims) shed();
    return victims.size();
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<id, entry> entries_;
  id next_ = 1;
};

}  // namespace parley::server
