#include "presence/local/local_presence.hpp"

namespace parley::presence {

// Each change is decided and told to the watchers under the lock (watchers::notify only posts):
// two changes made at once on two threads reach every watcher in the order they were made, so
// the last state a watcher is told is the user's state.

void local_presence::connected(const std::string& username, bool hide_last_seen) {
  std::lock_guard lock(mutex_);
  auto& u = users_[username];
  u.last_seen_hidden = hide_last_seen;
  if (++u.connections != 1) return;  // already online: no change to report
  watchers_.notify(username, state{true, 0, hide_last_seen});
}

void local_presence::set_last_seen_hidden(const std::string& username, bool hidden) {
  std::lock_guard lock(mutex_);
  auto it = users_.find(username);
  if (it == users_.end() || it->second.last_seen_hidden == hidden) return;
  auto& u = it->second;
  u.last_seen_hidden = hidden;
  watchers_.notify(username,
                   state{u.connections > 0, u.connections > 0 ? 0 : u.last_seen_ms, hidden});
}

void local_presence::disconnected(const std::string& username, std::uint64_t at_ms) {
  std::lock_guard lock(mutex_);
  auto it = users_.find(username);
  if (it == users_.end() || it->second.connections == 0) return;
  auto& u = it->second;
  u.last_seen_ms = at_ms;
  if (--u.connections != 0) return;
  watchers_.notify(username, state{false, at_ms, u.last_seen_hidden});
}

state local_presence::lookup(const std::string& username) const {
  std::lock_guard lock(mutex_);
  auto it = users_.find(username);
  if (it == users_.end()) return {};
  return state{it->second.connections > 0, it->second.last_seen_ms, it->second.last_seen_hidden};
}

subscription_id local_presence::subscribe(const std::vector<std::string>& usernames,
                                          listener on_change) {
  return watchers_.subscribe(usernames, std::move(on_change));
}

void local_presence::unsubscribe(subscription_id id) { watchers_.unsubscribe(id); }

}  // namespace parley::presence
