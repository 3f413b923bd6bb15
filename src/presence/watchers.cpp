#include "presence/watchers.hpp"

#include <utility>

namespace parley::presence {

subscription_id watchers::subscribe(const std::vector<std::string>& usernames,
                                    listener on_change) {
  auto shared = std::make_shared<listener>(std::move(on_change));
  std::lock_guard lock(mutex_);
  const subscription_id id = next_id_++;
  for (const auto& name : usernames) by_user_[name].emplace(id, shared);
  subscriptions_.emplace(id, usernames);
  return id;
}

void watchers::unsubscribe(subscription_id id) {
  std::lock_guard lock(mutex_);
  auto it = subscriptions_.find(id);
  if (it == subscriptions_.end()) return;
  for (const auto& name : it->second) {
    auto user = by_user_.find(name);
    if (user == by_user_.end()) continue;
    user->second.erase(id);
    if (user->second.empty()) by_user_.erase(user);
  }
  subscriptions_.erase(it);
}

void watchers::notify(const std::string& username, const state& now) const {
  std::vector<std::shared_ptr<listener>> targets;
  {
    std::lock_guard lock(mutex_);
    auto user = by_user_.find(username);
    if (user == by_user_.end()) return;
    targets.reserve(user->second.size());
    for (const auto& [id, l] : user->second) targets.push_back(l);
  }
  for (const auto& t : targets) (*t)(username, now);
}

}  // namespace parley::presence
