#include "presence/redis/redis_presence.hpp"

#include "bus/redis/redis_bus.hpp"
#include "common/clock.hpp"
#include "parley/bus/v1/bus.pb.h"

namespace parley::presence {

namespace pb = parley::bus::v1;

redis_presence::redis_presence(bus::redis_bus& bus, std::chrono::seconds ttl)
    : bus_(bus), ttl_(ttl) {
  bus_.set_presence(
      [this](std::uint64_t node, bool full, const std::vector<pb::PresenceState>& states) {
        apply_remote(node, full, states, std::chrono::steady_clock::now());
      },
      [this] { publish_snapshot(); },
      [this](std::chrono::steady_clock::time_point now) { expire(now); });
}

state redis_presence::merged(const user& u) const {
  state s;
  s.online = u.connections > 0;
  s.last_seen_ms = u.last_seen_ms;
  s.last_seen_hidden = u.last_seen_hidden;
  for (const auto& [_, r] : u.nodes) {
    s.online = s.online || r.online;
    s.last_seen_ms = std::max(s.last_seen_ms, r.last_seen_ms);
    if (!u.hidden_known) s.last_seen_hidden = s.last_seen_hidden || r.hidden;
  }
  if (s.online) s.last_seen_ms = 0;
  return s;
}

void redis_presence::announce(const std::string& username, const user& u) {
  pb::PresenceState s;
  s.set_user(username);
  s.set_online(u.connections > 0);
  s.set_last_seen_ms(u.last_seen_ms);
  s.set_last_seen_hidden(u.last_seen_hidden);
  bus_.publish_presence({std::move(s)});
}

void redis_presence::publish_snapshot() {
  std::vector<pb::PresenceState> out;
  std::lock_guard lock(mutex_);
  for (const auto& [name, u] : users_) {
    if (u.connections == 0) continue;
    pb::PresenceState s;
    s.set_user(name);
    s.set_online(true);
    s.set_last_seen_hidden(u.last_seen_hidden);
    out.push_back(std::move(s));
  }
  bus_.publish_presence(std::move(out), true);
}

// Each change is decided, announced and told to the watchers under the lock, so that every
// watcher is told the changes in the order they were made (presence.hpp).

void redis_presence::connected(const std::string& username, bool hide_last_seen) {
  std::lock_guard lock(mutex_);
  auto& u = users_[username];
  const state before = merged(u);
  u.last_seen_hidden = hide_last_seen;
  u.hidden_known = true;
  if (++u.connections != 1) return;  // already online here: nothing new
  announce(username, u);
  const state now = merged(u);
  if (now.online != before.online || now.last_seen_hidden != before.last_seen_hidden) {
    watchers_.notify(username, now);
  }
}

void redis_presence::set_last_seen_hidden(const std::string& username, bool hidden) {
  std::lock_guard lock(mutex_);
  auto it = users_.find(username);
  if (it == users_.end() || (it->second.hidden_known && it->second.last_seen_hidden == hidden))
    return;
  auto& u = it->second;
  u.last_seen_hidden = hidden;
  u.hidden_known = true;
  announce(username, u);
  watchers_.notify(username, merged(u));
}

void redis_presence::disconnected(const std::string& username, std::uint64_t at_ms) {
  std::lock_guard lock(mutex_);
  auto it = users_.find(username);
  if (it == users_.end() || it->second.connections == 0) return;
  auto& u = it->second;
  u.last_seen_ms = at_ms;
  if (--u.connections != 0) return;
  announce(username, u);
  const state now = merged(u);
  if (now.online) return;  // still online on another node
  watchers_.notify(username, now);
}

void redis_presence::apply_remote(std::uint64_t node, bool full,
                                  const std::vector<pb::PresenceState>& states,
                                  std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto update = [&](const std::string& name, user& u, const remote& r) {
    const state before = merged(u);
    u.nodes[node] = r;
    const state after = merged(u);
    if (after.online == before.online && after.last_seen_ms == before.last_seen_ms &&
        after.last_seen_hidden == before.last_seen_hidden)
      return;
    watchers_.notify(name, after);
  };
  std::set<std::string> listed;
  for (const auto& s : states) {
    listed.insert(s.user());
    update(s.user(), users_[s.user()],
           remote{s.online(), s.last_seen_ms(), s.last_seen_hidden(), now});
  }
  if (full) {
    // Users the node no longer lists went offline there (when, it does not say: now).
    for (auto& [name, u] : users_) {
      auto it = u.nodes.find(node);
      if (it == u.nodes.end() || !it->second.online || listed.contains(name)) continue;
      remote r = it->second;
      r.online = false;
      r.last_seen_ms = std::max(r.last_seen_ms, now_ms());
      r.heard = now;
      update(name, u, r);
    }
  }
}

void redis_presence::expire(std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mutex_);
  for (auto& [name, u] : users_) {
    const state before = merged(u);
    bool dropped = false;
    for (auto it = u.nodes.begin(); it != u.nodes.end();) {
      if (it->second.online && now - it->second.heard > ttl_) {
        // The node stopped announcing (it died, or cannot reach Redis): offline there.
        it->second.online = false;
        dropped = true;
      }
      ++it;
    }
    if (!dropped) continue;
    const state after = merged(u);
    if (after.online == before.online) continue;
    watchers_.notify(name, after);
  }
}

state redis_presence::lookup(const std::string& username) const {
  std::lock_guard lock(mutex_);
  auto it = users_.find(username);
  if (it == users_.end()) return {};
  return merged(it->second);
}

subscription_id redis_presence::subscribe(const std::vector<std::string>& usernames,
                                          listener on_change) {
  return watchers_.subscribe(usernames, std::move(on_change));
}

void redis_presence::unsubscribe(subscription_id id) { watchers_.unsubscribe(id); }

}  // namespace parley::presence
