// pg::connection in pipeline mode, against the run's PostgreSQL server (the ctest fixture
// postgres_start): deferred statements, where their failures show, and that the connection
// is whole again after a sync.
#include "store/postgresql/pg_connection.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "common/log.hpp"
#include "postgres_test_server.hpp"

namespace parley::store::pg {
namespace {

class pipeline : public ::testing::Test {
 protected:
  pipeline() {
    std::random_device rd;
    const std::string conninfo = test_support::postgres_database(
        std::to_string(rd()) + "_" +
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::string error;
    // Every wait below goes through the answer timeout's polling (none comes near it).
    db.set_answer_timeout(std::chrono::seconds(20));
    if (!db.open(conninfo, error)) throw std::runtime_error(error);
    if (!db.run("SET client_min_messages = warning; "
                "CREATE TABLE IF NOT EXISTS t (k BIGINT PRIMARY KEY, v TEXT NOT NULL)"))
      throw std::runtime_error(db.error_message());
    if (!db.enter_pipeline()) throw std::runtime_error(db.error_message());
  }

  std::uint64_t count() {
    auto r = db.exec("SELECT count(*) FROM t");
    EXPECT_TRUE(r) << db.error_message();
    return r ? r->u64(0, 0) : 0;
  }

  connection db;
};

// libpq's reasons run over lines ("\n\t" between them); the log and /healthz get one line.
TEST(pg_connection, a_failed_connection_is_explained_in_one_line) {
  connection db;
  std::string error;
  ASSERT_FALSE(db.open("host=127.0.0.1 port=1 connect_timeout=5", error));
  EXPECT_NE(error.find("127.0.0.1"), std::string::npos) << error;
  EXPECT_EQ(error.find_first_of("\n\t\r"), std::string::npos) << error;
  EXPECT_EQ(error.find("  "), std::string::npos) << error;
  EXPECT_FALSE(error.empty() || error.back() == ' ') << error;
  EXPECT_FALSE(db.ok());
}

// The server's warnings reach the node's log as one line at warn, not raw on stderr; its
// notices only at debug.
// A silent database host is found within seconds, not the kernel's minutes: the connection's
// timeouts default to 10 s, and what the operator's conninfo sets wins.
TEST(pg_connection, timeouts_have_defaults_that_the_conninfo_overrides) {
  const std::string conninfo = test_support::postgres_database("pg_connection_timeouts");
  connection db;
  std::string error;
  ASSERT_TRUE(db.open(conninfo, error)) << error;
  EXPECT_EQ(db.option("connect_timeout"), "10");
  EXPECT_EQ(db.option("keepalives"), "1");
  EXPECT_EQ(db.option("keepalives_idle"), "5");
  EXPECT_EQ(db.option("tcp_user_timeout"), "10000");
  auto r = db.exec("SELECT current_schema()");
  ASSERT_TRUE(r) << db.error_message();
  EXPECT_EQ(r->text(0, 0), "t_pg_connection_timeouts") << "the conninfo's own options hold";
  ASSERT_TRUE(db.open(conninfo + " connect_timeout=3 tcp_user_timeout=2500", error)) << error;
  EXPECT_EQ(db.option("connect_timeout"), "3");
  EXPECT_EQ(db.option("tcp_user_timeout"), "2500");
}

// A server that stays silent past the answer timeout (pg_sleep here; a frozen process in
// life) loses the connection with errc::unavailable, whichever way the statement was sent,
// within about the timeout, which counts from the last byte the server sent.
TEST(pg_connection, a_server_silent_past_the_answer_timeout_loses_the_connection) {
  const std::string conninfo = test_support::postgres_database("pg_connection_answer_timeout");
  connection db;
  db.set_answer_timeout(std::chrono::milliseconds(1000));
  std::string error;
  using clock = std::chrono::steady_clock;
  auto expect_lost = [&](const char* how, auto statement) {
    ASSERT_TRUE(db.open(conninfo, error)) << error;
    const auto start = clock::now();
    const boost::system::error_code e = statement();
    const auto took = clock::now() - start;
    EXPECT_EQ(e, errc::unavailable) << how;
    EXPECT_NE(db.error_message().find("no answer from the database within 1000 ms"),
              std::string::npos)
        << how << ": " << db.error_message();
    EXPECT_FALSE(db.ok()) << how;
    EXPECT_GE(took, std::chrono::milliseconds(900)) << how;
    EXPECT_LT(took, std::chrono::milliseconds(5000)) << how << ": the statement sleeps 10 s";
  };
  auto error_of = [](auto r) { return r ? boost::system::error_code{} : r.error(); };
  expect_lost("exec", [&] { return error_of(db.exec("SELECT pg_sleep(10)")); });
  expect_lost("run", [&] { return error_of(db.run("SELECT 1; SELECT pg_sleep(10)")); });
  expect_lost("pipelined exec", [&] {
    if (auto e = error_of(db.enter_pipeline())) return e;
    return error_of(db.exec("SELECT pg_sleep(10)"));
  });
  expect_lost("pipelined sync", [&] {
    if (auto e = error_of(db.enter_pipeline())) return e;
    if (auto e = error_of(db.defer("SELECT pg_sleep(10)"))) return e;
    return error_of(db.sync());
  });

  // An answer that keeps coming (rows of 100 kB, each past the server's send buffer, one every
  // 0.3 s) is waited for however long it takes as a whole; and the timeout survives open().
  ASSERT_TRUE(db.open(conninfo, error)) << error;
  const auto start = clock::now();
  auto r = db.exec("SELECT pg_sleep(0.3), repeat('x', 100000) FROM generate_series(1, 5)");
  ASSERT_TRUE(r) << db.error_message();
  EXPECT_EQ(r->size(), 5);
  EXPECT_GE(clock::now() - start, std::chrono::milliseconds(1400));
  ASSERT_TRUE(db.open(conninfo, error)) << error;
  EXPECT_FALSE(db.exec("SELECT pg_sleep(10)")) << "the timeout is kept across open()";
}

TEST(pg_connection, the_servers_warnings_are_logged_as_one_line) {
  connection db;
  std::string error;
  ASSERT_TRUE(db.open(test_support::postgres_database("notices"), error)) << error;
  const std::string sql =
      "SET client_min_messages = notice; "
      "DO $$ BEGIN RAISE WARNING E'first\\n\\tsecond'; RAISE NOTICE 'a notice'; END $$";
  ::testing::internal::CaptureStderr();
  const bool ran = !!db.run(sql);
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(ran) << db.error_message();
  EXPECT_NE(err.find("[warn] store: PostgreSQL says: WARNING: first second\n"), std::string::npos)
      << err;
  EXPECT_EQ(err.find("a notice"), std::string::npos) << err;
  EXPECT_EQ(err.find("\tsecond"), std::string::npos) << err;

  set_log_level(log_level::debug);
  ::testing::internal::CaptureStderr();
  const bool again = !!db.run(sql);
  const std::string debug = ::testing::internal::GetCapturedStderr();
  set_log_level(log_level::info);
  ASSERT_TRUE(again) << db.error_message();
  EXPECT_NE(debug.find("[debug] store: PostgreSQL says: NOTICE: a notice\n"), std::string::npos)
      << debug;
}

TEST_F(pipeline, deferred_statements_are_read_back_by_the_next_exec) {
  ASSERT_TRUE(db.defer("BEGIN"));
  for (std::uint64_t k = 1; k <= 50; ++k)
    ASSERT_TRUE(db.defer("INSERT INTO t (k, v) VALUES ($1, $2)", params().add(k).text("x")));
  // The exec sees every deferred insert (same transaction, sent before it).
  EXPECT_EQ(count(), 50u);
  EXPECT_FALSE(db.deferred_failed());
  ASSERT_TRUE(db.defer("COMMIT"));
  ASSERT_TRUE(db.sync());
  EXPECT_FALSE(db.pipeline_aborted());
  EXPECT_EQ(count(), 50u);
  ASSERT_TRUE(db.sync());
}

TEST_F(pipeline, a_deferred_failure_shows_at_the_next_exec_and_a_sync_ends_it) {
  ASSERT_TRUE(db.defer("BEGIN"));
  ASSERT_TRUE(db.defer("INSERT INTO t (k, v) VALUES ($1, $2)", params().add(std::uint64_t{1}).text("a")));
  // The same key again: a unique violation the caller does not wait for.
  ASSERT_TRUE(db.defer("INSERT INTO t (k, v) VALUES ($1, $2)", params().add(std::uint64_t{1}).text("b")));
  auto r = db.exec("SELECT count(*) FROM t");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::io_error);
  EXPECT_TRUE(db.deferred_failed());
  EXPECT_TRUE(db.pipeline_aborted());
  EXPECT_TRUE(db.sqlstate_is(unique_violation)) << db.sqlstate() << " " << db.error_message();
  // Until a sync, the server skips everything.
  EXPECT_FALSE(db.exec("SELECT 1"));
  // run() syncs first, then rolls back; the connection works again.
  ASSERT_TRUE(db.run("ROLLBACK")) << db.error_message();
  EXPECT_FALSE(db.pipeline_aborted());
  db.reset_failures();
  EXPECT_FALSE(db.deferred_failed());
  EXPECT_EQ(count(), 0u) << "nothing of the failed transaction stays";
  ASSERT_TRUE(db.sync());
}

TEST_F(pipeline, a_savepoint_undoes_one_failed_statement_and_keeps_the_rest) {
  ASSERT_TRUE(db.defer("BEGIN"));
  ASSERT_TRUE(db.defer("INSERT INTO t (k, v) VALUES ($1, $2)", params().add(std::uint64_t{1}).text("a")));
  ASSERT_TRUE(db.defer("SAVEPOINT r"));
  // Its own statement fails (not a deferred one).
  auto dup = db.exec("INSERT INTO t (k, v) VALUES ($1, $2) RETURNING k",
                     params().add(std::uint64_t{1}).text("b"));
  ASSERT_FALSE(dup);
  EXPECT_FALSE(db.deferred_failed());
  EXPECT_TRUE(db.sqlstate_is(unique_violation));
  ASSERT_TRUE(db.run("ROLLBACK TO SAVEPOINT r")) << db.error_message();
  ASSERT_TRUE(db.defer("INSERT INTO t (k, v) VALUES ($1, $2)", params().add(std::uint64_t{2}).text("c")));
  ASSERT_TRUE(db.defer("COMMIT"));
  ASSERT_TRUE(db.sync()) << db.error_message();
  EXPECT_EQ(count(), 2u);
  ASSERT_TRUE(db.sync());
}

TEST_F(pipeline, a_statement_first_prepared_in_an_aborted_segment_is_prepared_again) {
  ASSERT_TRUE(db.defer("SELECT 1/0"));  // fails: the rest of the segment is skipped
  // Its Parse is skipped too: the connection must not believe it prepared.
  ASSERT_TRUE(db.defer("SELECT k FROM t WHERE k = $1", params().add(std::uint64_t{7})));
  EXPECT_FALSE(db.sync());
  EXPECT_TRUE(db.deferred_failed());
  db.reset_failures();
  auto r = db.exec("SELECT k FROM t WHERE k = $1", params().add(std::uint64_t{7}));
  ASSERT_TRUE(r) << db.error_message();
  EXPECT_TRUE(r->empty());
  ASSERT_TRUE(db.sync());
}

TEST_F(pipeline, collected_rows_arrive_when_a_later_read_passes_them) {
  ASSERT_TRUE(db.defer("BEGIN"));
  std::vector<std::shared_ptr<rows>> got;
  for (std::uint64_t k = 1; k <= 20; ++k) {
    got.push_back(std::make_shared<rows>());
    ASSERT_TRUE(db.collect("INSERT INTO t (k, v) VALUES ($1, $2) RETURNING k * 10",
                           params().add(k).text("x"), got.back()));
  }
  // Sent, not read: nothing has arrived yet.
  EXPECT_TRUE(got.front()->empty());
  ASSERT_TRUE(db.defer("COMMIT"));
  ASSERT_TRUE(db.sync()) << db.error_message();
  for (std::uint64_t k = 1; k <= 20; ++k) {
    ASSERT_EQ(got[k - 1]->size(), 1) << k;
    EXPECT_EQ(got[k - 1]->u64(0, 0), k * 10);
  }
  EXPECT_EQ(count(), 20u);
  ASSERT_TRUE(db.sync());
}

TEST_F(pipeline, a_collected_statement_that_fails_leaves_no_rows_and_shows_as_deferred) {
  ASSERT_TRUE(db.defer("BEGIN"));
  auto first = std::make_shared<rows>();
  auto again = std::make_shared<rows>();
  auto after = std::make_shared<rows>();
  ASSERT_TRUE(db.collect("INSERT INTO t (k, v) VALUES ($1, $2) RETURNING k",
                         params().add(std::uint64_t{1}).text("a"), first));
  ASSERT_TRUE(db.collect("INSERT INTO t (k, v) VALUES ($1, $2) RETURNING k",
                         params().add(std::uint64_t{1}).text("b"), again));
  // Skipped by the server after the failure: no rows either.
  ASSERT_TRUE(db.collect("INSERT INTO t (k, v) VALUES ($1, $2) RETURNING k",
                         params().add(std::uint64_t{2}).text("c"), after));
  EXPECT_FALSE(db.sync());
  EXPECT_TRUE(db.deferred_failed());
  EXPECT_TRUE(db.sqlstate_is(unique_violation)) << db.sqlstate();
  EXPECT_EQ(first->size(), 1) << "the statement before the failure did run";
  EXPECT_TRUE(again->empty());
  EXPECT_TRUE(after->empty());
  ASSERT_TRUE(db.run("ROLLBACK"));
  db.reset_failures();
  EXPECT_TRUE(db.sqlstate().empty()) << "reset_failures forgets the last error too";
  EXPECT_EQ(count(), 0u);
  // With deferring off, a collect is waited for: its rows are there on return.
  db.set_deferring(false);
  auto now = std::make_shared<rows>();
  ASSERT_TRUE(db.collect("SELECT 41 + 1", {}, now));
  ASSERT_EQ(now->size(), 1);
  EXPECT_EQ(now->u64(0, 0), 42u);
  ASSERT_TRUE(db.sync());
}

TEST_F(pipeline, with_deferring_off_each_statement_is_waited_for) {
  db.set_deferring(false);
  ASSERT_TRUE(db.defer("BEGIN"));
  ASSERT_TRUE(db.defer("INSERT INTO t (k, v) VALUES ($1, $2)", params().add(std::uint64_t{1}).text("a")));
  // The failure is this call's own, at once.
  auto dup = db.defer("INSERT INTO t (k, v) VALUES ($1, $2)", params().add(std::uint64_t{1}).text("a"));
  ASSERT_FALSE(dup);
  EXPECT_FALSE(db.deferred_failed());
  ASSERT_TRUE(db.run("ROLLBACK"));
  EXPECT_EQ(count(), 0u);
  ASSERT_TRUE(db.sync());
}

}  // namespace
}  // namespace parley::store::pg
