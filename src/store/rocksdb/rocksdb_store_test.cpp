// What the RocksDB store promises beyond the Store contract (store_contract_test.cpp): its
// threads, its bounded caches, the cost of a login, and the expiry of dedupe records.
#include "store/rocksdb/rocksdb_store.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "store/store_test_calls.hpp"
#include "temp_dir.hpp"

namespace parley::store {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using test_calls::in_flight;
using test_calls::wait_for;

registration register_user(store& db, const std::string& name) {
  auto r = wait_for<registration>([&](auto done) { db.register_account({name, {}}, done); });
  EXPECT_TRUE(r) << name;
  return r ? *r : registration{};
}

send_request request(const registration& from, const std::string& from_name, const std::string& to,
                     const std::string& client_id) {
  return {from.user, from.device, from_name, chat_ref{0, to}, client_id, "hi", 1, 0};
}

// The names the operator sees in `top -H` and parley-bench's CPU split reads; stop() joins them.
TEST(rocksdb_store, names_its_threads_and_joins_them_on_stop) {
  auto thread_names = [] {
    std::multiset<std::string> names;
    for (const auto& task : fs::directory_iterator("/proc/self/task")) {
      std::ifstream comm(task.path() / "comm");
      std::string name;
      if (std::getline(comm, name)) names.insert(name);
    }
    return names;
  };
  test_support::temp_dir dir("parley_store_threads_");
  {
    rocksdb_options o;
    o.path = dir.path();
    o.reader_threads = 2;
    rocksdb_store store(o);
    auto names = thread_names();
    EXPECT_EQ(names.count("store-writer"), 1u);
    EXPECT_EQ(names.count("store-reader-0"), 1u);
    EXPECT_EQ(names.count("store-reader-1"), 1u);
    store.stop();
    // join() returns when the kernel clears the thread's id, a moment before the task leaves
    // /proc/self/task: wait for that, with a deadline (a thread never joined stays listed).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    auto store_threads = [&] {
      names = thread_names();
      return names.count("store-writer") + names.count("store-reader-0") +
             names.count("store-reader-1");
    };
    while (store_threads() != 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(names.count("store-writer"), 0u);
    EXPECT_EQ(names.count("store-reader-0"), 0u);
    EXPECT_EQ(names.count("store-reader-1"), 0u);
  }
}

// The writer's caches are emptied when they pass max_cached; what they held comes back from the
// store, so sequence numbers, users and sends go on as if nothing happened.
TEST(rocksdb_store, caches_past_their_bound_refill_from_the_store) {
  test_support::temp_dir dir("parley_store_caches_");
  rocksdb_options o;
  o.path = dir.path();
  o.max_cached = 2;  // every group past two users or two chats empties the caches
  rocksdb_store db(o);
  std::vector<registration> users;
  const std::vector<std::string> names = {"ann", "ben", "cat", "dan", "eve"};
  for (const auto& name : names) users.push_back(register_user(db, name));
  ASSERT_FALSE(::testing::Test::HasFailure());
  // Three rounds over the ten chats of five users, each way in turn: each chat's seq goes 1,
  // 2, 3, and it keeps its chat id.
  std::map<std::pair<std::size_t, std::size_t>, chat_id> chats;
  int n = 0;
  for (std::uint64_t round = 1; round <= 3; ++round) {
    for (std::size_t a = 0; a < names.size(); ++a) {
      for (std::size_t b = a + 1; b < names.size(); ++b) {
        const auto [from, to] = round == 2 ? std::pair{b, a} : std::pair{a, b};
        auto m = wait_for<send_outcome>([&](auto done) {
          db.send(request(users[from], names[from], names[to], "m" + std::to_string(n++)), done);
        });
        ASSERT_TRUE(m) << names[from] << " -> " << names[to];
        EXPECT_EQ(m->seq, round) << names[from] << " -> " << names[to];
        const auto it = chats.try_emplace({a, b}, m->chat).first;
        EXPECT_EQ(it->second, m->chat) << names[from] << " -> " << names[to];
      }
    }
  }
  std::set<chat_id> distinct;
  for (const auto& [pair, chat] : chats) distinct.insert(chat);
  EXPECT_EQ(distinct.size(), 10u);
  auto taken = wait_for<registration>([&](auto done) { db.register_account({"ann", {}}, done); });
  EXPECT_EQ(taken.error(), errc::username_taken) << "a user the cache forgot is still known";
}

// A login reads the device's cursors and the heads of its chats: its cost must not grow with the
// messages the store has carried. (The device-queue design deleted one queue entry per acked
// message, and every login stepped over those tombstones until compaction.)
TEST(rocksdb_store, logins_do_not_slow_with_traffic) {
  test_support::temp_dir dir("parley_store_logins_");
  rocksdb_options o;
  o.path = dir.path();
  o.sync = false;  // what is measured is the reads' work, not the disk's
  rocksdb_store db(o);
  auto alice = register_user(db, "alice");
  auto bob = register_user(db, "bob");
  ASSERT_FALSE(::testing::Test::HasFailure());
  const auto before_traffic = db.backlog_keys_skipped_for_tests(bob.device, bob.user);

  // 20,000 messages, 1,000 in flight at a time; bob acks each thousand in ten acks of 100.
  constexpr std::uint64_t total = 20'000;
  constexpr std::uint64_t batch = 1'000;
  constexpr std::uint64_t ack_every = 100;
  chat_id chat = 0;
  for (std::uint64_t sent = 0; sent < total; sent += batch) {
    in_flight<send_outcome> sends;
    for (std::uint64_t i = sent; i < sent + batch; ++i)
      db.send(request(alice, "alice", "bob", "m" + std::to_string(i)), sends.slot());
    for (auto& r : sends.all()) {
      ASSERT_TRUE(r);
      chat = r->chat;
    }
    in_flight<std::vector<receipt_delivery>> acks;
    for (std::uint64_t up_to = sent + ack_every; up_to <= sent + batch; up_to += ack_every)
      db.ack(bob.device, bob.user, {{chat, up_to}}, acks.slot());
    for (auto& r : acks.all()) ASSERT_TRUE(r);
  }

  auto backlog =
      wait_for<device_backlog>([&](auto done) { db.backlog(bob.device, bob.user, done); });
  ASSERT_TRUE(backlog);
  EXPECT_TRUE(backlog->behind.empty());
  const auto caught_up = db.backlog_keys_skipped_for_tests(bob.device, bob.user);
  EXPECT_LT(caught_up, 100u) << "before the traffic: " << before_traffic;

  // One more message: the chat is behind by one, and finding that costs as little.
  ASSERT_TRUE(wait_for<send_outcome>(
      [&](auto done) { db.send(request(alice, "alice", "bob", "last"), done); }));
  backlog = wait_for<device_backlog>([&](auto done) { db.backlog(bob.device, bob.user, done); });
  ASSERT_TRUE(backlog);
  ASSERT_EQ(backlog->behind.size(), 1u);
  EXPECT_EQ(backlog->behind[0].chat, chat);
  EXPECT_EQ(backlog->behind[0].cursor, total);
  EXPECT_EQ(backlog->behind[0].head, total + 1);
  const auto one_behind = db.backlog_keys_skipped_for_tests(bob.device, bob.user);
  EXPECT_LT(one_behind, 100u) << "before the traffic: " << before_traffic;
}

// Dedupe records older than the window are dropped by compaction; younger ones are kept.
TEST(rocksdb_store, compaction_drops_dedupe_records_past_their_window) {
  auto dedupe_left = [](std::chrono::milliseconds window, bool wait_past_window) {
    test_support::temp_dir dir("parley_store_dedupe_");
    rocksdb_options o;
    o.path = dir.path();
    o.dedupe_window = window;
    rocksdb_store db(o);
    auto alice = register_user(db, "alice");
    register_user(db, "bob");
    for (int i = 0; i < 10; ++i) {
      auto m = wait_for<send_outcome>([&](auto done) {
        db.send(request(alice, "alice", "bob", "c" + std::to_string(i)), done);
      });
      EXPECT_TRUE(m) << i;
    }
    if (wait_past_window) std::this_thread::sleep_for(window + 200ms);
    return db.compact_and_count_dedupe_for_tests();
  };
  EXPECT_EQ(dedupe_left(100ms, true), 0u);
  EXPECT_EQ(dedupe_left(std::chrono::hours(24), false), 10u);
}

}  // namespace
}  // namespace parley::store
