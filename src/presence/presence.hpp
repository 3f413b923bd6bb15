// The Presence service: who is online, when they were last seen, and who wants to know.
//
// Embedded: presence/local/local_presence (in-process). Cluster (later): Redis with a TTL.
// Thread-safe. Listeners are called without any lock held, on the thread that changed the
// state; they must not block (a session posts to its own executor).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace parley::presence {

struct state {
  bool online = false;
  std::uint64_t last_seen_ms = 0;  // 0: not seen since this server started
};

using listener = std::function<void(const std::string& username, const state&)>;
using subscription_id = std::uint64_t;

class presence {
 public:
  virtual ~presence() = default;

  // A connection of `username` authenticated / closed. A user with several connections is
  // online until the last one closes.
  virtual void connected(const std::string& username) = 0;
  virtual void disconnected(const std::string& username, std::uint64_t at_ms) = 0;

  virtual state lookup(const std::string& username) const = 0;

  // Calls `on_change` at every change of any of `usernames` until unsubscribe().
  virtual subscription_id subscribe(const std::vector<std::string>& usernames,
                                    listener on_change) = 0;
  virtual void unsubscribe(subscription_id id) = 0;
};

}  // namespace parley::presence
