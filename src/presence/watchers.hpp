// Who watches whose presence: the subscriptions of a presence service (local_presence and
// redis_presence keep one each). Thread-safe, with a mutex of its own, held only to copy
// listeners: notify() calls them after releasing it, on the calling thread (the presence
// service calls notify() under its own lock, as presence.hpp says; a listener must not block).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "presence/presence.hpp"

namespace parley::presence {

class watchers {
 public:
  subscription_id subscribe(const std::vector<std::string>& usernames, listener on_change);
  void unsubscribe(subscription_id id);
  // Tells `username`'s watchers its state is `now` (nothing if nobody watches).
  void notify(const std::string& username, const state& now) const;

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::map<subscription_id, std::shared_ptr<listener>>> by_user_;
  std::unordered_map<subscription_id, std::vector<std::string>> subscriptions_;
  subscription_id next_id_ = 1;
};

}  // namespace parley::presence
