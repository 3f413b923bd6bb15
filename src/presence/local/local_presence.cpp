#include "presence/local/local_presence.hpp"

namespace parley::presence {

void local_presence::notify(const std::string& username, const state& s,
                            std::vector<std::shared_ptr<listener>> targets) {
  for (auto& t : targets) (*t)(username, s);
}

void local_presence::connected(const std::string& username, bool hide_last_seen) {
  std::vector<std::shared_ptr<listener>> targets;
  {
    std::lock_guard lock(mutex_);
    auto& u = users_[username];
    u.last_seen_hidden = hide_last_seen;
    if (++u.connections != 1) return;  // already online: no change to report
    for (auto& [id, l] : u.watchers) targets.push_back(l);
  }
  notify(username, state{true, 0, hide_last_seen}, std::move(targets));
}

void local_presence::set_last_seen_hidden(const std::string& username, bool hidden) {
  std::vector<std::shared_ptr<listener>> targets;
  state now;
  {
    std::lock_guard lock(mutex_);
    auto it = users_.find(username);
    if (it == users_.end() || it->second.last_seen_hidden == hidden) return;
    auto& u = it->second;
    u.last_seen_hidden = hidden;
    now = state{u.connections > 0, u.connections > 0 ? 0 : u.last_seen_ms, hidden};
    for (auto& [id, l] : u.watchers) targets.push_back(l);
  }
  notify(username, now, std::move(targets));
}

void local_presence::disconnected(const std::string& username, std::uint64_t at_ms) {
  std::vector<std::shared_ptr<listener>> targets;
  bool hidden = false;
  {
    std::lock_guard lock(mutex_);
    auto it = users_.find(username);
    if (it == users_.end() || it->second.connections == 0) return;
    auto& u = it->second;
    u.last_seen_ms = at_ms;
    if (--u.connections != 0) return;
    for (auto& [id, l] : u.watchers) targets.push_back(l);
    hidden = u.last_seen_hidden;
  }
  notify(username, state{false, at_ms, hidden}, std::move(targets));
}

state local_presence::lookup(const std::string& username) const {
  std::lock_guard lock(mutex_);
  auto it = users_.find(username);
  if (it == users_.end()) return {};
  return state{it->second.connections > 0, it->second.last_seen_ms, it->second.last_seen_hidden};
}

subscription_id local_presence::subscribe(const std::vector<std::string>& usernames,
                                          listener on_change) {
  auto shared = std::make_shared<listener>(std::move(on_change));
  std::lock_guard lock(mutex_);
  const subscription_id id = next_id_++;
  for (const auto& name : usernames) users_[name].watchers.emplace(id, shared);
  subscriptions_.emplace(id, usernames);
  return id;
}

void local_presence::unsubscribe(subscription_id id) {
  std::lock_guard lock(mutex_);
  auto it = subscriptions_.find(id);
  if (it == subscriptions_.end()) return;
  for (const auto& name : it->second) {
    auto u = users_.find(name);
    if (u == users_.end()) continue;
    u->second.watchers.erase(id);
    // Forget users nobody watches and nobody is connected as, but keep last-seen times.
    if (u->second.watchers.empty() && u->second.connections == 0 && u->second.last_seen_ms == 0) {
      users_.erase(u);
    }
  }
  subscriptions_.erase(it);
}

}  // namespace parley::presence
