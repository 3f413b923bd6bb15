// Whether a store accepts writes, and why not: set by its writer(s), read from any thread
// (Store::health(), /healthz). One log line per change of state, not per refused group.
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <utility>

#include "common/log.hpp"
#include "store/store.hpp"

namespace parley::store {

class write_health {
 public:
  // `resumed` is the line logged when writes are accepted again.
  explicit write_health(std::string resumed) : resumed_(std::move(resumed)) {}

  void set(bool ok, std::string reason) {
    const bool was = writable_.load();
    if (ok && was) return;
    {
      std::lock_guard lock(mutex_);
      reason_ = std::move(reason);
    }
    writable_.store(ok);
    if (ok) {
      log_warn() << resumed_;
    } else if (was) {
      std::lock_guard lock(mutex_);
      log_error() << "store: writes refused: " << reason_;
    }
  }

  bool writable() const { return writable_.load(); }

  store_health get() const {
    if (writable_.load()) return {};
    std::lock_guard lock(mutex_);
    return {false, reason_};
  }

 private:
  const std::string resumed_;
  std::atomic<bool> writable_{true};
  mutable std::mutex mutex_;
  std::string reason_;  // guarded by mutex_
};

}  // namespace parley::store
