// What the RocksDB store promises beyond the Store contract (store_contract_test.cpp): its
// threads, its bounded caches, the cost of a login, and the expiry of dedupe records.
#include "store/rocksdb/rocksdb_store.hpp"

#include <rocksdb/db.h>

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
  return {from.user, from.device, from_name, chat_ref{0, to}, client_id, "hi", 1, 0, {}};
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

// The store's write-ahead log is zero-filled ahead of its data when commits are synced
// (wal_prefill.hpp), not when they are not, and a clean stop cuts the zeros off; what was
// written is there after a reopen.
TEST(rocksdb_store, its_synced_log_is_zero_filled_ahead_and_cut_on_stop) {
  auto log_sizes = [](const fs::path& dir) {
    std::vector<std::uintmax_t> sizes;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".log") sizes.push_back(fs::file_size(e.path()));
    return sizes;
  };
  for (const bool sync : {true, false}) {
    SCOPED_TRACE(sync ? "synced" : "not synced");
    test_support::temp_dir dir("parley_store_wal_");
    rocksdb_options o;
    o.path = dir.path();
    o.sync = sync;
    o.wal_prefill_bytes = 1u << 20;
    {
      rocksdb_store db(o);
      register_user(db, "ann");
      const auto open_sizes = log_sizes(dir.path());
      ASSERT_EQ(open_sizes.size(), 1u);
      if (sync)
        EXPECT_EQ(open_sizes.front(), o.wal_prefill_bytes);
      else
        EXPECT_LT(open_sizes.front(), 64u * 1024) << "the log holds its data only";
      db.stop();
    }
    for (const auto size : log_sizes(dir.path()))
      EXPECT_LT(size, 64u * 1024) << "a clean stop leaves no zeros";
    rocksdb_store reopened(o);
    auto taken = wait_for<registration>([&](auto done) {
      reopened.register_account({"ann", {}}, done);
    });
    EXPECT_EQ(taken.error(), errc::username_taken);
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
  const auto before_traffic = db.backlog_cost_for_tests(bob.device, bob.user, 0).keys_skipped;

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
    in_flight<watermark_moves> acks;
    for (std::uint64_t up_to = sent + ack_every; up_to <= sent + batch; up_to += ack_every)
      db.ack(bob.device, bob.user, {{chat, up_to}}, acks.slot());
    for (auto& r : acks.all()) ASSERT_TRUE(r);
  }

  auto backlog =
      wait_for<device_backlog>([&](auto done) { db.backlog(bob.device, bob.user, 0, done); });
  ASSERT_TRUE(backlog);
  EXPECT_TRUE(backlog->behind.empty());
  const auto caught_up = db.backlog_cost_for_tests(bob.device, bob.user, 0).keys_skipped;
  EXPECT_LT(caught_up, 100u) << "before the traffic: " << before_traffic;

  // One more message: the chat is behind by one, and finding that costs as little.
  ASSERT_TRUE(wait_for<send_outcome>(
      [&](auto done) { db.send(request(alice, "alice", "bob", "last"), done); }));
  backlog = wait_for<device_backlog>([&](auto done) { db.backlog(bob.device, bob.user, 0, done); });
  ASSERT_TRUE(backlog);
  ASSERT_EQ(backlog->behind.size(), 1u);
  EXPECT_EQ(backlog->behind[0].chat, chat);
  EXPECT_EQ(backlog->behind[0].cursor, total);
  EXPECT_EQ(backlog->behind[0].head, total + 1);
  const auto one_behind = db.backlog_cost_for_tests(bob.device, bob.user, 0).keys_skipped;
  EXPECT_LT(one_behind, 100u) << "before the traffic: " << before_traffic;
}

// A login with the receipts stamp of the device's last session reads what changed since, not
// every chat: with 300 chats all caught up, it reads next to nothing, and the one chat that
// got a message and the one whose watermark moved are exactly what it lists. Counted with
// RocksDB's perf context (reads in the memtables, where all of this lives), not a timer.
TEST(rocksdb_store, a_login_reads_what_changed_not_every_chat) {
  test_support::temp_dir dir("parley_store_login_index_");
  rocksdb_options o;
  o.path = dir.path();
  o.sync = false;
  auto db = std::make_unique<rocksdb_store>(o);
  constexpr int peers = 300;
  auto alice = register_user(*db, "alice");
  std::vector<registration> others;
  for (int i = 0; i < peers; ++i) others.push_back(register_user(*db, "p" + std::to_string(i)));
  ASSERT_FALSE(::testing::Test::HasFailure());
  // Alice's first login (nothing yet): her index starts here.
  device_backlog at_login;
  db->backlog_cost_for_tests(alice.device, alice.user, 0, &at_login);
  // Each peer sends alice one message and acks her one reply; alice acks theirs.
  std::vector<chat_id> chats;
  for (int i = 0; i < peers; ++i) {
    const std::string name = "p" + std::to_string(i);
    auto in = wait_for<send_outcome>(
        [&](auto done) { db->send(request(others[i], name, "alice", "in" + name), done); });
    ASSERT_TRUE(in);
    chats.push_back(in->chat);
    auto out = wait_for<send_outcome>(
        [&](auto done) { db->send(request(alice, "alice", name, "out" + name), done); });
    ASSERT_TRUE(out);
    ASSERT_TRUE(wait_for<watermark_moves>(
        [&](auto done) { db->ack(others[i].device, others[i].user, {{in->chat, 2}}, done); }));
    ASSERT_TRUE(wait_for<watermark_moves>(
        [&](auto done) { db->ack(alice.device, alice.user, {{in->chat, 1}}, done); }));
  }
  // Without a stamp: every chat is read, and every peer's watermark listed.
  device_backlog full;
  const auto full_cost = db->backlog_cost_for_tests(alice.device, alice.user, 0, &full);
  EXPECT_TRUE(full.behind.empty()) << "her own replies are above her cursors, not others'";
  EXPECT_EQ(full.marks.size(), static_cast<std::size_t>(peers));
  EXPECT_GT(full_cost.memtable_reads, static_cast<std::uint64_t>(peers));

  // With it: nothing changed, and it costs next to nothing.
  device_backlog quiet;
  const auto quiet_cost = db->backlog_cost_for_tests(alice.device, alice.user, full.stamp, &quiet);
  EXPECT_TRUE(quiet.behind.empty());
  EXPECT_TRUE(quiet.marks.empty());
  EXPECT_LE(quiet_cost.memtable_reads, 4u) << "the full login read " << full_cost.memtable_reads;

  // One peer sends again, another reads alice's reply: exactly those two chats.
  ASSERT_TRUE(wait_for<send_outcome>(
      [&](auto done) { db->send(request(others[7], "p7", "alice", "again"), done); }));
  ASSERT_TRUE(wait_for<watermark_moves>(
      [&](auto done) { db->mark_read(others[9].user, chats[9], 2, done); }));
  device_backlog changed;
  const auto changed_cost =
      db->backlog_cost_for_tests(alice.device, alice.user, quiet.stamp, &changed);
  ASSERT_EQ(changed.behind.size(), 1u);
  EXPECT_EQ(changed.behind[0].chat, chats[7]);
  EXPECT_EQ(changed.behind[0].cursor, 1u);
  EXPECT_EQ(changed.behind[0].head, 3u);
  std::set<chat_id> marked;
  for (const auto& m : changed.marks) marked.insert(m.chat);
  EXPECT_EQ(marked, std::set<chat_id>{chats[9]});
  EXPECT_LT(changed_cost.memtable_reads, full_cost.memtable_reads / 10);

  // Her ack settles it; the next login with the new stamp is quiet again.
  ASSERT_TRUE(wait_for<watermark_moves>(
      [&](auto done) { db->ack(alice.device, alice.user, {{chats[7], 3}}, done); }));
  device_backlog settled;
  db->backlog_cost_for_tests(alice.device, alice.user, changed.stamp, &settled);
  EXPECT_TRUE(settled.behind.empty());
  EXPECT_TRUE(settled.marks.empty());

  // A restart forgets the index: the same stamp gets every chat's watermarks again, and the
  // chats are read whole, so those with only alice's own replies above her cursor are listed
  // too (the server's drain moves her cursor past them: done here by hand); a message that
  // arrived meanwhile is found. From the new stamp on, logins read what changed again.
  ASSERT_TRUE(wait_for<send_outcome>(
      [&](auto done) { db->send(request(others[11], "p11", "alice", "late"), done); }));
  db.reset();
  db = std::make_unique<rocksdb_store>(o);
  device_backlog restarted;
  db->backlog_cost_for_tests(alice.device, alice.user, settled.stamp, &restarted);
  EXPECT_EQ(restarted.behind.size(), static_cast<std::size_t>(peers) - 1) << "all but chat 7";
  EXPECT_EQ(restarted.marks.size(), static_cast<std::size_t>(peers) + 1) << "p9 read as well";
  EXPECT_GT(restarted.stamp, settled.stamp);
  std::vector<cursor_update> own_tails;
  for (const auto& p : restarted.behind) {
    if (p.chat == chats[11]) {
      EXPECT_EQ(p.cursor, 1u);
      EXPECT_EQ(p.head, 3u);
    } else {
      own_tails.push_back({p.chat, p.head});
    }
  }
  ASSERT_TRUE(wait_for<watermark_moves>(
      [&](auto done) { db->ack(alice.device, alice.user, own_tails, done); }));
  device_backlog after;
  const auto after_cost =
      db->backlog_cost_for_tests(alice.device, alice.user, restarted.stamp, &after);
  EXPECT_TRUE(after.marks.empty());
  ASSERT_EQ(after.behind.size(), 1u);
  EXPECT_EQ(after.behind[0].chat, chats[11]);
  EXPECT_LT(after_cost.memtable_reads, full_cost.memtable_reads / 10);
}

// A group message is one log entry and one dedupe record, whatever the group's size: the keys a
// send writes (RocksDB sequence numbers) are counted for a group of 2 and one of 512, and so
// are the keys of an ack in each (one cursor; the group's receipts are merged later).
TEST(rocksdb_store, a_group_message_writes_the_same_keys_whatever_the_group_size) {
  test_support::temp_dir dir("parley_store_group_writes_");
  rocksdb_options o;
  o.path = dir.path();
  o.sync = false;
  rocksdb_store db(o);
  std::vector<std::string> names;
  std::vector<registration> users;
  for (int i = 0; i < 512; ++i) {
    names.push_back("u" + std::to_string(i));
    users.push_back(register_user(db, names.back()));
  }
  ASSERT_FALSE(::testing::Test::HasFailure());
  auto make = [&](std::size_t size) {
    create_group_request r{users[0].user,
                           users[0].device,
                           names[0],
                           "g",
                           {names.begin() + 1, names.begin() + static_cast<std::ptrdiff_t>(size)},
                           1024,
                           "create-" + std::to_string(size)};
    auto g = wait_for<group_outcome>([&](auto done) { db.create_group(r, done); });
    EXPECT_TRUE(g);
    return g ? g->info.chat : chat_id{0};
  };
  struct cost {
    std::uint64_t send = 0, ack = 0;
    std::size_t recipients = 0;
  };
  auto measure = [&](chat_id chat, int n) {
    cost c;
    const std::uint64_t before = db.latest_sequence_for_tests();
    send_request m{users[0].user, users[0].device, names[0], {chat, {}},
                   "m" + std::to_string(chat) + "-" + std::to_string(n), std::string(100, 'x'), 4, 0, {}};
    auto sent = wait_for<send_outcome>([&](auto done) { db.send(m, done); });
    EXPECT_TRUE(sent);
    c.send = db.latest_sequence_for_tests() - before;
    c.recipients = sent ? sent->recipients.size() : 0;
    const std::uint64_t before_ack = db.latest_sequence_for_tests();
    EXPECT_TRUE(wait_for<watermark_moves>([&](auto done) {
      db.ack(users[1].device, users[1].user, {{chat, sent->seq}}, done);
    }));
    c.ack = db.latest_sequence_for_tests() - before_ack;
    return c;
  };
  const chat_id small = make(2);
  const chat_id large = make(512);
  ASSERT_FALSE(::testing::Test::HasFailure());
  for (int i = 0; i < 3; ++i) {
    const cost a = measure(small, i);
    const cost b = measure(large, i);
    EXPECT_EQ(a.recipients, 1u);
    EXPECT_EQ(b.recipients, 511u);
    EXPECT_EQ(a.send, 3u) << "the entry, its dedupe record, the Snowflake high-water mark";
    EXPECT_EQ(b.send, a.send) << "independent of the member count";
    EXPECT_EQ(a.ack, 1u) << "one cursor";
    EXPECT_EQ(b.ack, a.ack);
  }
}

// A data directory of the first format (per-device queues, a "queue" column family) is
// refused at start with a message that says what to do, and is left as it was.
TEST(rocksdb_store, refuses_a_directory_of_the_device_queue_format_and_leaves_it) {
  test_support::temp_dir dir("parley_store_old_format_");
  {
    rocksdb::Options o;
    o.create_if_missing = true;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, dir.path().string(), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::ColumnFamilyHandle* queue = nullptr;
    ASSERT_TRUE(db->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), "queue", &queue).ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), queue, "k", "an old queue entry").ok());
    ASSERT_TRUE(db->DestroyColumnFamilyHandle(queue).ok());
  }
  rocksdb_options o;
  o.path = dir.path();
  try {
    rocksdb_store db(o);
    ADD_FAILURE() << "opened";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("old device-queue format"), std::string::npos) << what;
    EXPECT_NE(what.find("move the directory aside"), std::string::npos) << what;
  }
  std::vector<std::string> families;
  ASSERT_TRUE(
      rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir.path().string(), &families).ok());
  EXPECT_EQ(families, (std::vector<std::string>{"default", "queue"})) << "nothing added";
}

// All memtables together stay within memtable_budget_bytes (RocksDB's write buffer manager):
// 24 MiB of messages leave at most the budget in memory once flushes have run, against far
// more with a budget that does not bind.
TEST(rocksdb_store, memtables_stay_within_their_budget) {
#if defined(__SANITIZE_THREAD__)
  // The flushes and compactions this forces read blocks the writer's lookups loaded, inside
  // Debian's uninstrumented librocksdb: TSan reports its block handover as a race with no
  // frame of ours to suppress it by (tests/tsan.supp). The release and ASan runs check this.
  GTEST_SKIP() << "RocksDB's flushes and compactions under TSan: see the comment";
#endif
  auto memtables_after_traffic = [](std::size_t budget) {
    test_support::temp_dir dir("parley_store_memtables_");
    rocksdb_options o;
    o.path = dir.path();
    o.sync = false;
    o.memtable_budget_bytes = budget;
    rocksdb_store db(o);
    auto alice = register_user(db, "alice");
    register_user(db, "bob");
    const std::string payload(2048, 'p');
    for (int round = 0; round < 12; ++round) {
      in_flight<send_outcome> sends;
      for (int i = 0; i < 1024; ++i) {
        auto r = request(alice, "alice", "bob", "m" + std::to_string(round * 1024 + i));
        r.payload = payload;
        db.send(std::move(r), sends.slot());
      }
      for (auto& r : sends.all()) EXPECT_TRUE(r);
    }
    // RocksDB checks the budget as writes arrive and flushes in the background: with the
    // traffic going on (a small message every 20 ms), the total must settle under the budget
    // (waiting at most 30 s).
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    std::uint64_t bytes = db.memtable_bytes_for_tests();
    for (int n = 0; bytes > budget && std::chrono::steady_clock::now() < deadline; ++n) {
      EXPECT_TRUE(wait_for<send_outcome>([&](auto done) {
        db.send(request(alice, "alice", "bob", "late" + std::to_string(n)), done);
      }));
      std::this_thread::sleep_for(20ms);
      bytes = db.memtable_bytes_for_tests();
    }
    return bytes;
  };
  constexpr std::size_t budget = 4u << 20;
  EXPECT_LE(memtables_after_traffic(budget), budget);
  EXPECT_GT(memtables_after_traffic(256u << 20), 16u << 20) << "the traffic fills memtables";
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
