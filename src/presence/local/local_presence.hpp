// In-process presence for the embedded server. Last-seen times live in memory: they are
// unknown (0) after a restart until the user connects again.
#pragma once

#include <mutex>
#include <unordered_map>

#include "presence/presence.hpp"
#include "presence/watchers.hpp"

namespace parley::presence {

class local_presence final : public presence {
 public:
  void connected(const std::string& username, bool hide_last_seen) override;
  void set_last_seen_hidden(const std::string& username, bool hidden) override;
  void disconnected(const std::string& username, std::uint64_t at_ms) override;
  state lookup(const std::string& username) const override;
  subscription_id subscribe(const std::vector<std::string>& usernames, listener on_change) override;
  void unsubscribe(subscription_id id) override;

 private:
  struct user_entry {
    int connections = 0;
    std::uint64_t last_seen_ms = 0;
    bool last_seen_hidden = false;
  };

  mutable std::mutex mutex_;
  std::unordered_map<std::string, user_entry> users_;
  watchers watchers_;
};

}  // namespace parley::presence
