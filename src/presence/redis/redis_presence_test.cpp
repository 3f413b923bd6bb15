// The cluster's presence merge: what this node knows of its own users and what other nodes
// announced, with the TTL after which a silent node's users count as offline. The bus is not
// connected here (its announcements go nowhere); other nodes' announcements are fed in as the
// bus would hand them over.
#include "presence/redis/redis_presence.hpp"

#include <gtest/gtest.h>

#include "bus/redis/redis_bus.hpp"
#include "parley/bus/v1/bus.pb.h"

namespace parley::presence {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

bus::v1::PresenceState announced(const std::string& user, bool online, std::uint64_t last_seen = 0,
                                 bool hidden = false) {
  bus::v1::PresenceState s;
  s.set_user(user);
  s.set_online(online);
  s.set_last_seen_ms(last_seen);
  s.set_last_seen_hidden(hidden);
  return s;
}

class redis_presence_merge : public ::testing::Test {
 protected:
  std::shared_ptr<redis::client> client =
      std::make_shared<redis::client>(redis::client_options{{"127.0.0.1", 1}, false, 100ms});
  bus::redis_bus bus{client, {1, 30s}};
  redis_presence p{bus, 30s};
  std::vector<std::pair<std::string, state>> seen;
  void watch(const std::vector<std::string>& users) {
    p.subscribe(users, [this](const std::string& u, const state& s) { seen.emplace_back(u, s); });
  }
};

TEST_F(redis_presence_merge, a_user_online_on_another_node_is_online_here) {
  watch({"bob"});
  const auto now = clock::now();
  EXPECT_FALSE(p.lookup("bob").online);
  p.apply_remote(2, false, {announced("bob", true)}, now);
  EXPECT_TRUE(p.lookup("bob").online);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_TRUE(seen.back().second.online);
  // The same announcement again (a refresh) changes nothing: no notification.
  p.apply_remote(2, true, {announced("bob", true)}, now + 10s);
  EXPECT_EQ(seen.size(), 1u);
  // Offline there, with a last-seen time.
  p.apply_remote(2, false, {announced("bob", false, 1234)}, now + 11s);
  EXPECT_FALSE(p.lookup("bob").online);
  EXPECT_EQ(p.lookup("bob").last_seen_ms, 1234u);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_FALSE(seen.back().second.online);
}

TEST_F(redis_presence_merge, online_anywhere_counts_and_local_connections_count_too) {
  watch({"bob"});
  const auto now = clock::now();
  p.apply_remote(2, false, {announced("bob", true)}, now);
  p.connected("bob", false);  // and here
  p.apply_remote(2, false, {announced("bob", false, 50)}, now);
  EXPECT_TRUE(p.lookup("bob").online) << "still connected here";
  p.disconnected("bob", 99);
  EXPECT_FALSE(p.lookup("bob").online);
  EXPECT_EQ(p.lookup("bob").last_seen_ms, 99u);  // the latest of every node's
  ASSERT_FALSE(seen.empty());
  EXPECT_FALSE(seen.back().second.online);
}

TEST_F(redis_presence_merge, a_full_list_that_leaves_a_user_out_means_offline_there) {
  const auto now = clock::now();
  p.apply_remote(2, false, {announced("bob", true), announced("carol", true)}, now);
  p.apply_remote(2, true, {announced("carol", true)}, now + 10s);
  EXPECT_FALSE(p.lookup("bob").online);
  EXPECT_GT(p.lookup("bob").last_seen_ms, 0u);
  EXPECT_TRUE(p.lookup("carol").online);
}

TEST_F(redis_presence_merge, a_node_that_stops_announcing_loses_its_users_after_the_ttl) {
  watch({"bob"});
  const auto now = clock::now();
  p.apply_remote(2, false, {announced("bob", true)}, now);
  p.expire(now + 29s);
  EXPECT_TRUE(p.lookup("bob").online);
  p.expire(now + 31s);
  EXPECT_FALSE(p.lookup("bob").online);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_FALSE(seen.back().second.online);
}

TEST_F(redis_presence_merge, the_privacy_setting_comes_with_the_announcement) {
  const auto now = clock::now();
  p.apply_remote(2, false, {announced("bob", false, 77, true)}, now);
  EXPECT_TRUE(p.lookup("bob").last_seen_hidden);
  // This node's own knowledge of the setting wins over an older announcement.
  p.connected("bob", false);
  p.disconnected("bob", 80);
  EXPECT_FALSE(p.lookup("bob").last_seen_hidden);
}

}  // namespace
}  // namespace parley::presence
