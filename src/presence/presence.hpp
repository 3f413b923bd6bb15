// The Presence service: who is online, when they were last seen, and who wants to know.
//
// Embedded: presence/local/local_presence (in-process). Cluster: presence/redis/redis_presence
// (states announced on the Redis bus, each node's expiring without a refresh).
// Thread-safe. Listeners are called on the thread that changed the state, with the service's
// lock held, so that every watcher is told the changes in the order they were made (the last
// state told is the user's state): a listener must not block and must not call back into the
// service (a session posts to its own executor).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace parley::presence {

struct state {
  bool online = false;
  std::uint64_t last_seen_ms = 0;  // 0: not seen since this server started
  // The user hides last seen (a privacy setting): whoever shows the state must not show
  // last_seen_ms. The presence service keeps the exact time; hiding and rounding are the
  // business of the edge that sends it to clients.
  bool last_seen_hidden = false;
};

using listener = std::function<void(const std::string& username, const state&)>;
using subscription_id = std::uint64_t;

class presence {
 public:
  virtual ~presence() = default;

  // A connection of `username` authenticated / closed. A user with several connections is
  // online until the last one closes.
  // `hide_last_seen` is the user's privacy setting as of this connection.
  virtual void connected(const std::string& username, bool hide_last_seen) = 0;
  // The user changed the setting: watchers are told.
  virtual void set_last_seen_hidden(const std::string& username, bool hidden) = 0;
  virtual void disconnected(const std::string& username, std::uint64_t at_ms) = 0;

  virtual state lookup(const std::string& username) const = 0;

  // Calls `on_change` at every change of any of `usernames` until unsubscribe().
  virtual subscription_id subscribe(const std::vector<std::string>& usernames,
                                    listener on_change) = 0;
  virtual void unsubscribe(subscription_id id) = 0;
};

}  // namespace parley::presence
