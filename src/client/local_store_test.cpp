// The local store's receipts stamps, its group records (schema 4), and its migrations from the
// formats before them (schemas 2 and 3).
// The migration from the first format (protocol v1) is tested through the CLI
// (tests/integration/cli_test.cpp, cli.an_old_local_db_is_migrated_and_a_newer_one_refused).
#include "client/local_store.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "sqlite_file.hpp"
#include "temp_dir.hpp"

namespace parley::client {
namespace {

namespace fs = std::filesystem;

using test_support::query_int;
using test_support::run_sql;

TEST(local_store, receipts_stamps_only_rise_and_are_kept_per_device) {
  test_support::temp_dir dir("parley_local_store_test_");
  const auto db = dir.path() / "local.db";
  {
    local_store store(db);
    EXPECT_EQ(store.receipts_stamp(7), 0u);  // none kept yet
    EXPECT_FALSE(store.raise_receipts_stamp(7, 0));
    EXPECT_EQ(store.receipts_stamp(7), 0u);
    EXPECT_TRUE(store.raise_receipts_stamp(7, 10));
    EXPECT_EQ(store.receipts_stamp(7), 10u);
    EXPECT_FALSE(store.raise_receipts_stamp(7, 10));
    EXPECT_FALSE(store.raise_receipts_stamp(7, 4));  // never lowered
    EXPECT_EQ(store.receipts_stamp(7), 10u);
    EXPECT_TRUE(store.raise_receipts_stamp(7, 11));
    // Another device's stamp is its own.
    EXPECT_EQ(store.receipts_stamp(8), 0u);
    EXPECT_TRUE(store.raise_receipts_stamp(8, 3));
    EXPECT_EQ(store.receipts_stamp(8), 3u);
    EXPECT_EQ(store.receipts_stamp(7), 11u);
  }
  // Durable: a new process finds them.
  local_store again(db);
  EXPECT_EQ(again.receipts_stamp(7), 11u);
  EXPECT_EQ(again.receipts_stamp(8), 3u);
}

TEST(local_store, receipts_stamps_compare_as_unsigned_64_bit_numbers) {
  test_support::temp_dir dir("parley_local_store_test_");
  local_store store(dir.path() / "local.db");
  constexpr std::uint64_t high = (std::uint64_t{1} << 63) + 5;  // negative as SQLite's integer
  constexpr std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  EXPECT_TRUE(store.raise_receipts_stamp(1, 100));
  EXPECT_TRUE(store.raise_receipts_stamp(1, high));
  EXPECT_EQ(store.receipts_stamp(1), high);
  EXPECT_FALSE(store.raise_receipts_stamp(1, 200));
  EXPECT_FALSE(store.raise_receipts_stamp(1, high - 1));
  EXPECT_EQ(store.receipts_stamp(1), high);
  EXPECT_TRUE(store.raise_receipts_stamp(1, max));
  EXPECT_FALSE(store.raise_receipts_stamp(1, high));
  EXPECT_EQ(store.receipts_stamp(1), max);
}

// A local.db of schema 2 (before receipts stamps) is migrated in place: what it held is kept,
// no stamp is kept yet (the next session gets every watermark), and stamps work from then on.
TEST(local_store, a_schema_2_database_is_migrated_in_place) {
  test_support::temp_dir dir("parley_local_store_test_");
  const auto db = dir.path() / "local.db";
  {
    local_store store(db);
    store.set_meta("identity", "key bytes");
    local_message m;
    m.server_id = 42;
    m.chat_id = 9;
    m.seq = 1;
    m.peer = "bob";
    m.direction = message_direction::outgoing;
    m.sent_at_ms = 1000;
    m.text = "hello";
    ASSERT_TRUE(store.add_message(m));
    ASSERT_TRUE(store.raise_watermark(9, "bob", message_status::delivered, 1));
    ASSERT_TRUE(store.raise_receipts_stamp(7, 55));
  }
  // What a parley of schema 2 left: no receipts_stamps table.
  ASSERT_TRUE(run_sql(db, "DROP TABLE receipts_stamps; PRAGMA user_version = 2;"));
  ASSERT_EQ(query_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'receipts_stamps'"), 0);

  {
    local_store store(db);
    EXPECT_EQ(store.meta("identity"), "key bytes");
    const auto m = store.message(42);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->text, "hello");
    EXPECT_EQ(m->chat_id, 9u);
    EXPECT_EQ(m->status, message_status::delivered);
    EXPECT_EQ(store.chat_of("bob"), 9u);
    EXPECT_EQ(store.receipts_stamp(7), 0u);
    EXPECT_TRUE(store.raise_receipts_stamp(7, 60));
    EXPECT_EQ(store.receipts_stamp(7), 60u);
  }
  EXPECT_EQ(query_int(db, "PRAGMA user_version"), local_store::schema_version);
  EXPECT_EQ(local_store::schema_version, 6);
  EXPECT_EQ(query_int(db, "SELECT stamp FROM receipts_stamps WHERE device_id = 7"), 60);
}

// A local.db of schema 3 (before groups) is migrated in place: its messages stay 1:1 text
// messages with their statuses, and the group records work from then on.
TEST(local_store, a_schema_3_database_is_migrated_in_place) {
  test_support::temp_dir dir("parley_local_store_test_");
  const auto db = dir.path() / "local.db";
  {
    local_store store(db);
    local_message m;
    m.server_id = 42;
    m.chat_id = 9;
    m.seq = 1;
    m.peer = "bob";
    m.direction = message_direction::outgoing;
    m.sent_at_ms = 1000;
    m.text = "hello";
    ASSERT_TRUE(store.add_message(m));
    ASSERT_TRUE(store.raise_watermark(9, "bob", message_status::read, 1));
  }
  // What a parley of schema 3 left: no group tables, no messages.kind.
  ASSERT_TRUE(run_sql(db,
                      "DROP INDEX pending_by_sender; DROP TABLE pending_group_messages; "
                      "DROP TABLE sender_key_holders; DROP TABLE chat_groups; "
                      "DROP TABLE sender_keys; ALTER TABLE messages DROP COLUMN kind; "
                      "DROP TABLE media; DROP TABLE uploads; DROP TABLE group_events; "
                      "PRAGMA user_version = 3;"));
  ASSERT_EQ(query_int(db, "SELECT count(*) FROM pragma_table_info('messages') WHERE name = 'kind'"),
            0);
  {
    local_store store(db);
    const auto history = store.history("bob", 10);
    ASSERT_EQ(history.size(), 1u);
    EXPECT_EQ(history[0].text, "hello");
    EXPECT_EQ(history[0].kind, message_kind::text);
    EXPECT_EQ(history[0].status, message_status::read);
    EXPECT_EQ(store.chat_of("bob"), 9u);
    EXPECT_TRUE(store.groups().empty());
    store.set_group(77, "friends");
    store.put_sender_key("77", "bob", 2, "record");
    EXPECT_EQ(store.sender_key("77", "bob", 2), "record");
    // Schema 5's media tables come with the migration too.
    store.put_media(42, 9, 1, "media bytes");
    ASSERT_TRUE(store.media(42));
    EXPECT_EQ(store.media(42)->content, "media bytes");
    EXPECT_EQ(store.media(42)->seq, 1u);
    store.put_upload("/tmp/x", 10, 5, "state");
    EXPECT_EQ(store.upload("/tmp/x", 10, 5), "state");
    EXPECT_FALSE(store.upload("/tmp/x", 10, 6)) << "a file changed since is a new upload";
    // And schema 6's group events.
    EXPECT_FALSE(store.group_event(43));
    store.put_group_event(43, "event bytes");
    EXPECT_EQ(store.group_event(43), "event bytes");
  }
  EXPECT_EQ(query_int(db, "PRAGMA user_version"), 6);
}

TEST(local_store, groups_are_named_and_their_members_may_leave) {
  test_support::temp_dir dir("parley_local_store_test_");
  local_store store(dir.path() / "local.db");
  EXPECT_FALSE(store.is_group(5));
  store.set_group(5, "");
  ASSERT_TRUE(store.group(5));
  EXPECT_EQ(store.group(5)->name, "");  // known, not named yet
  EXPECT_TRUE(store.group(5)->member);
  store.set_group(5, "friends");
  store.set_group(5, "");  // keeps the name
  store.set_group(6, "friends");
  store.set_group(8, "work");
  EXPECT_EQ(store.group(5)->name, "friends");
  const auto named = store.groups_named("friends");
  ASSERT_EQ(named.size(), 2u);  // names are not unique
  EXPECT_EQ(named[0].chat_id, 5u);
  EXPECT_EQ(named[1].chat_id, 6u);
  store.set_group_member(6, false);
  EXPECT_FALSE(store.group(6)->member);
  store.set_group(6, "old friends");
  EXPECT_FALSE(store.group(6)->member);  // a rename is not a return
  EXPECT_EQ(store.groups().size(), 3u);
}

TEST(local_store, sender_keys_holders_and_pending_messages_are_kept_per_group) {
  test_support::temp_dir dir("parley_local_store_test_");
  local_store store(dir.path() / "local.db");
  store.put_sender_key("5", "alice", 1, "a");
  store.put_sender_key("5", "bob", 2, "b");
  store.put_sender_key("6", "alice", 1, "other group");
  store.put_sender_key("5", "alice", 1, "a2");  // replaced
  EXPECT_EQ(store.sender_key("5", "alice", 1), "a2");
  EXPECT_FALSE(store.sender_key("5", "alice", 2));
  store.remove_sender_key("5", "bob", 2);
  EXPECT_FALSE(store.sender_key("5", "bob", 2));
  EXPECT_EQ(store.remove_sender_keys("5"), 1u);
  EXPECT_EQ(store.sender_key("6", "alice", 1), "other group");

  store.add_sender_key_holder(5, "bob", {11, 3, false});
  store.add_sender_key_holder(5, "bob", {11, 3, true});
  store.add_sender_key_holder(5, "carol", {11, 4, true});
  store.add_sender_key_holder(6, "bob", {12, 1, true});
  auto holders = store.sender_key_holders(5);
  ASSERT_EQ(holders.size(), 2u);
  EXPECT_TRUE(holders["bob"].delivered);
  EXPECT_EQ(holders["carol"].joined_seq, 4u);
  store.forget_sender_key_holders(5);
  EXPECT_TRUE(store.sender_key_holders(5).empty());
  EXPECT_EQ(store.sender_key_holders(6).size(), 1u);

  EXPECT_TRUE(store.add_pending({100, 5, 7, "alice", 1, 1000, "second"}));
  EXPECT_TRUE(store.add_pending({99, 5, 4, "alice", 1, 900, "first"}));
  EXPECT_TRUE(store.add_pending({101, 5, 8, "bob", 2, 1100, "bob's"}));
  EXPECT_FALSE(store.add_pending({100, 5, 7, "alice", 1, 1000, "second"}));  // once
  EXPECT_TRUE(store.has_pending(99));
  const auto from_alice = store.pending_from(5, "alice", 1);
  ASSERT_EQ(from_alice.size(), 2u);
  EXPECT_EQ(from_alice[0].payload, "first");  // in the chat's order
  EXPECT_EQ(from_alice[1].seq, 7u);
  EXPECT_EQ(store.pending_in(5).size(), 3u);
  store.remove_pending(99);
  EXPECT_FALSE(store.has_pending(99));
  EXPECT_EQ(store.pending_in(5).size(), 2u);
}

TEST(local_store, a_newer_database_is_refused_and_left_as_it_is) {
  test_support::temp_dir dir("parley_local_store_test_");
  const auto db = dir.path() / "local.db";
  { local_store store(db); }
  const int newer = local_store::schema_version + 1;
  ASSERT_TRUE(run_sql(db, "PRAGMA user_version = " + std::to_string(newer) + ";"));
  try {
    local_store store(db);
    ADD_FAILURE() << "a database of version " << newer << " was opened";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("has format version " + std::to_string(newer) +
                                         ", newer than this parley knows"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(query_int(db, "PRAGMA user_version"), newer);
}

}  // namespace
}  // namespace parley::client
