// The cluster's Presence: who is online on any node, and when they were last seen.
//
// Each node knows its own connections exactly (as the embedded presence does) and announces
// every change of its users on the bus's "parley:all" channel (redis_bus), and its whole list
// of online users at every refresh (ttl / 3). Every node merges what it hears into a cache:
// a user is online if it is online here or on a node whose last announcement of it is
// younger than the TTL (a node that dies stops announcing, and its users go offline after
// the TTL). lookup() answers from that cache, never from a round trip: nothing here blocks
// an I/O thread. A node that starts late knows the others' users after their next refresh;
// last-seen times of users who went offline before it started are unknown to it (0, as on
// one node after a restart).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "presence/presence.hpp"
#include "presence/watchers.hpp"

namespace parley::bus {
class redis_bus;
}  // namespace parley::bus
namespace parley::bus::v1 {
class PresenceState;
}  // namespace parley::bus::v1

namespace parley::presence {

class redis_presence final : public presence {
 public:
  // Announces through `bus` and registers with it for the other nodes' announcements.
  redis_presence(bus::redis_bus& bus, std::chrono::seconds ttl);

  void connected(const std::string& username, bool hide_last_seen) override;
  void set_last_seen_hidden(const std::string& username, bool hidden) override;
  void disconnected(const std::string& username, std::uint64_t at_ms) override;
  state lookup(const std::string& username) const override;
  subscription_id subscribe(const std::vector<std::string>& usernames, listener on_change) override;
  void unsubscribe(subscription_id id) override;

  // Tests: another node's announcement, as the bus hands it over.
  void apply_remote(std::uint64_t node, bool full,
                    const std::vector<bus::v1::PresenceState>& states,
                    std::chrono::steady_clock::time_point now);
  // Forgets announcements older than the TTL (called at every refresh).
  void expire(std::chrono::steady_clock::time_point now);
  // Publishes the full list of the users online here (called at every refresh), under the
  // lock that orders the announcements of changes: a list never overtakes a change made
  // after it was taken.
  void publish_snapshot();

 private:
  struct remote {
    bool online = false;
    std::uint64_t last_seen_ms = 0;
    bool hidden = false;
    std::chrono::steady_clock::time_point heard{};
  };
  struct user {
    std::size_t connections = 0;  // here
    std::uint64_t last_seen_ms = 0;
    bool last_seen_hidden = false;
    bool hidden_known = false;
    std::map<std::uint64_t, remote> nodes;  // node -> its last announcement of the user
  };

  // The merged state of a user (lock held).
  state merged(const user& u) const;
  void announce(const std::string& username, const user& u);

  bus::redis_bus& bus_;
  std::chrono::seconds ttl_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, user> users_;
  watchers watchers_;
};

}  // namespace parley::presence
