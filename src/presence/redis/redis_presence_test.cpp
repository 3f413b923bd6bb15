// The cluster's presence merge: what this node knows of its own users and what other nodes
// announced, with the TTL after which a silent node's users count as offline. The bus is not
// connected here (its announcements go nowhere); other nodes' announcements are fed in as the
// bus would hand them over.
#include "presence/redis/redis_presence.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <thread>

#include "bus/redis/redis_bus.hpp"
#include "parley/bus/v1/bus.pb.h"
#include "redis/redis_client.hpp"
#include "redis_server.hpp"

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

// On a real Redis: what another node hears of a user, in order. A full list (the refresh's)
// is published under the lock that orders the announcements of changes, so it never says
// what was true before a change whose announcement went out ahead of it. Node 1 toggles alice
// on one thread while another publishes its full list; node 2 checks every list it hears
// against the last change it heard.
TEST(redis_presence_on_redis, a_full_list_never_overtakes_a_change_announced_after_it) {
  test_support::redis_server redis;
  auto client_for = [&] {
    return std::make_shared<redis::client>(
        redis::client_options{{"127.0.0.1", redis.port()}, false, 100ms});
  };
  struct heard_state {
    std::mutex mutex;
    std::size_t lists = 0;
    std::size_t changes = 0;
    bool online = false;  // alice, as last announced by a change
    std::size_t contradicted = 0;
  } heard;
  auto client_2 = client_for();
  bus::redis_bus bus_2{client_2, {2, 30s}};
  bus_2.set_presence(
      [&](std::uint64_t, bool full, const std::vector<bus::v1::PresenceState>& states) {
        std::lock_guard lock(heard.mutex);
        std::optional<bool> alice;
        for (const auto& s : states)
          if (s.user() == "alice") alice = s.online();
        if (!full) {
          if (alice) {
            heard.online = *alice;
            ++heard.changes;
          }
          return;
        }
        ++heard.lists;
        if (alice.value_or(false) != heard.online) ++heard.contradicted;
      },
      nullptr, nullptr);
  client_2->start();
  auto client_1 = client_for();
  bus::redis_bus bus_1{client_1, {1, 30s}};
  redis_presence node_1{bus_1, 30s};
  client_1->start();
  // Both connected and subscribed: node 2 hears node 1's lists.
  const auto deadline = clock::now() + 10s;
  for (;;) {
    node_1.publish_snapshot();
    {
      std::lock_guard lock(heard.mutex);
      if (heard.lists > 0) break;
    }
    ASSERT_LT(clock::now(), deadline) << "node 2 never heard node 1";
    std::this_thread::sleep_for(20ms);
  }

  constexpr int rounds = 10000;
  std::atomic<bool> toggling{true};
  std::thread toggler([&] {
    for (int r = 0; r < rounds; ++r) {
      // At most 256 changes ahead of node 2, as the lists below: the two streams interleave
      // for the whole run instead of the changes being over before many lists are out.
      for (;;) {
        {
          std::lock_guard lock(heard.mutex);
          if (2u * static_cast<std::size_t>(r) <= heard.changes + 256) break;
        }
        std::this_thread::sleep_for(50us);
      }
      node_1.connected("alice", false);
      node_1.disconnected("alice", static_cast<std::uint64_t>(r + 1));
    }
    toggling = false;
  });
  // Lists are published as fast as node 2 takes them, at most 256 ahead of it: unbounded, the
  // loop outruns Redis on a slow machine, and the client refuses commands past max_pending
  // (changes among them) or node 2 is still reading old lists when the wait below ends.
  std::size_t published = 0;
  while (toggling) {
    bool ahead = false;
    {
      std::lock_guard lock(heard.mutex);
      ahead = published > heard.lists + 256;
    }
    if (ahead) {
      std::this_thread::sleep_for(50us);
      continue;
    }
    node_1.publish_snapshot();
    ++published;
  }
  toggler.join();
  // Everything published has arrived once the last change has (one channel, in order).
  const auto end = clock::now() + 10s;
  for (;;) {
    {
      std::lock_guard lock(heard.mutex);
      if (heard.changes >= 2u * rounds) break;
    }
    ASSERT_LT(clock::now(), end) << "node 2 did not hear every change";
    std::this_thread::sleep_for(20ms);
  }
  std::lock_guard lock(heard.mutex);
  EXPECT_GT(heard.lists, published / 2) << "too few lists arrived for the test to mean anything";
  EXPECT_EQ(heard.contradicted, 0u) << "of " << heard.lists << " lists";
  EXPECT_FALSE(heard.online);
}

}  // namespace
}  // namespace parley::presence
