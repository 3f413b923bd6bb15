// The open connections of a server, so that shutdown can close them all. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace parley::server {

class connection_set {
 public:
  using id = std::uint64_t;

  // `close` must not block (it posts to the connection's executor).
  id add(std::function<void()> close) {
    std::lock_guard lock(mutex_);
    const id i = next_++;
    closers_.emplace(i, std::move(close));
    return i;
  }
  void remove(id i) {
    std::lock_guard lock(mutex_);
    closers_.erase(i);
  }
  void close_all() {
    std::vector<std::function<void()>> all;
    {
      std::lock_guard lock(mutex_);
      for (auto& [i, c] : closers_) all.push_back(c);
    }
    for (auto& c : all) c();
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return closers_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<id, std::function<void()>> closers_;
  id next_ = 1;
};

}  // namespace parley::server
