// The local store's receipts stamps and its migration from the format before them (schema 2).
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
  EXPECT_EQ(local_store::schema_version, 3);
  EXPECT_EQ(query_int(db, "SELECT stamp FROM receipts_stamps WHERE device_id = 7"), 60);
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
