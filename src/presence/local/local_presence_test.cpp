#include "presence/local/local_presence.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

namespace parley::presence {
namespace {

TEST(local_presence, online_until_the_last_connection_closes) {
  local_presence p;
  std::vector<std::pair<std::string, state>> seen;
  auto id =
      p.subscribe({"bob"}, [&](const std::string& u, const state& s) { seen.emplace_back(u, s); });
  p.connected("bob", false);
  p.connected("bob", false);  // a second connection: no change
  EXPECT_TRUE(p.lookup("bob").online);
  p.disconnected("bob", 1000);
  EXPECT_TRUE(p.lookup("bob").online);
  p.disconnected("bob", 2000);
  EXPECT_FALSE(p.lookup("bob").online);
  EXPECT_EQ(p.lookup("bob").last_seen_ms, 2000u);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen[0].second.online);
  EXPECT_FALSE(seen[1].second.online);
  EXPECT_EQ(seen[1].second.last_seen_ms, 2000u);
  p.unsubscribe(id);
  p.connected("bob", false);
  EXPECT_EQ(seen.size(), 2u);
}

// Changes on two threads at once (one connection closing as another opens: a phone changing
// networks) reach a watcher in the order they were made, so that the last state it is told is
// the state the user is in.
TEST(local_presence, changes_made_at_once_on_two_threads_reach_watchers_in_order) {
  local_presence p;
  std::mutex mutex;
  state last;
  auto id = p.subscribe({"bob"}, [&](const std::string&, const state& s) {
    std::lock_guard lock(mutex);
    last = s;
  });
  p.connected("bob", false);
  std::atomic<int> round{0};
  std::atomic<int> done{0};
  constexpr int rounds = 20000;
  int wrong = 0;
  // Each round: bob has one connection; it closes on this thread while a new one opens on the
  // other. Whatever the interleaving, he ends online with one connection.
  std::thread opener([&] {
    for (int r = 1; r <= rounds; ++r) {
      while (round.load() < r) std::this_thread::yield();
      p.connected("bob", false);
      done.store(r);
    }
  });
  for (int r = 1; r <= rounds; ++r) {
    round.store(r);
    p.disconnected("bob", static_cast<std::uint64_t>(r));
    while (done.load() < r) std::this_thread::yield();
    std::lock_guard lock(mutex);
    if (!last.online) ++wrong;
    last.online = true;  // as told by the round's changes, whichever reported
  }
  opener.join();
  p.unsubscribe(id);
  EXPECT_TRUE(p.lookup("bob").online);
  EXPECT_EQ(wrong, 0) << "rounds whose last notification said offline while bob was online";
}

TEST(local_presence, unknown_user_is_offline_and_never_seen) {
  local_presence p;
  EXPECT_FALSE(p.lookup("nobody").online);
  EXPECT_EQ(p.lookup("nobody").last_seen_ms, 0u);
  p.disconnected("nobody", 5);  // a disconnect without a connect changes nothing
  EXPECT_EQ(p.lookup("nobody").last_seen_ms, 0u);
}

TEST(local_presence, only_subscribers_of_that_user_hear) {
  local_presence p;
  int alice_events = 0, bob_events = 0;
  p.subscribe({"alice"}, [&](const std::string&, const state&) { ++alice_events; });
  p.subscribe({"bob"}, [&](const std::string&, const state&) { ++bob_events; });
  p.connected("alice", false);
  EXPECT_EQ(alice_events, 1);
  EXPECT_EQ(bob_events, 0);
}

TEST(local_presence, hiding_last_seen_is_carried_and_announced) {
  local_presence p;
  std::vector<state> seen;
  p.subscribe({"bob"}, [&](const std::string&, const state& s) { seen.push_back(s); });
  p.connected("bob", true);
  p.disconnected("bob", 60'500);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen[0].last_seen_hidden);
  EXPECT_TRUE(seen[1].last_seen_hidden);
  EXPECT_TRUE(p.lookup("bob").last_seen_hidden);
  p.set_last_seen_hidden("bob", false);  // a change is announced with the time
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_FALSE(seen[2].last_seen_hidden);
  EXPECT_EQ(seen[2].last_seen_ms, 60'500u);
  p.set_last_seen_hidden("bob", false);  // no change: nothing announced
  EXPECT_EQ(seen.size(), 3u);
}

}  // namespace
}  // namespace parley::presence
