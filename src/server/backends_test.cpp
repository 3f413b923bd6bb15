// What the backends take from the config (without opening them).
#include "server/backends.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "postgres_test_server.hpp"
#include "store/store_test_calls.hpp"

namespace parley::server {
namespace {

using namespace std::chrono_literals;

TEST(backends, the_embedded_store_takes_max_pending_writes_as_configured) {
  config c;
  EXPECT_EQ(store_max_pending(c), 65'536u);
  c.max_pending_writes = 1'000'000;
  EXPECT_EQ(store_max_pending(c), 1'000'000u);
}

TEST(backends, a_postgresql_store_lets_at_most_8192_writes_wait) {
  config c;
  c.store_url = "postgresql://parley@127.0.0.1:5432/parley";
  EXPECT_EQ(store_max_pending(c), 8'192u);  // the default, 65,536, is capped
  c.max_pending_writes = 8'193;
  EXPECT_EQ(store_max_pending(c), 8'192u);
  c.max_pending_writes = 8'192;
  EXPECT_EQ(store_max_pending(c), 8'192u);
  c.max_pending_writes = 100;
  EXPECT_EQ(store_max_pending(c), 100u);  // a smaller value is kept
}

// make_backends gives the store it opens store_max_pending(cfg): with the writer held inside
// a commit (the commit observer waits on a writer_gate), that many writes wait and the next
// are refused BUSY. `c` names the store; its max_pending_writes is set to 3 here.
void expect_three_writes_wait_and_the_rest_are_refused(config c) {
  c.max_pending_writes = 3;
  store::test_calls::writer_gate gate;
  auto b =
      make_backends(c, [hold = gate.hook()](std::chrono::nanoseconds, std::size_t) { hold(); });
  // The writer is idle after this one (anything it wrote at open is committed too).
  auto first = store::test_calls::wait_for<store::registration>([&](auto done) {
    b.store->register_account({"first", {}}, done);
  });
  ASSERT_TRUE(first);
  gate.arm();
  store::test_calls::in_flight<store::registration> holding;
  b.store->register_account({"holding", {}}, holding.slot());
  if (!gate.wait_until_held()) {
    gate.open();
    FAIL() << "the writer never committed";
  }
  store::test_calls::in_flight<store::registration> more;
  for (int i = 0; i < 5; ++i)
    b.store->register_account({"user" + std::to_string(i), {}}, more.slot());
  const bool refused = more.wait_until_completed(2, 10s);
  const auto so_far = more.so_far();
  gate.open();
  ASSERT_TRUE(refused) << "the writes beyond 3 were not refused at once";
  for (std::size_t i = 0; i < 3; ++i) EXPECT_FALSE(so_far[i]) << "write " << i << " must wait";
  for (std::size_t i = 3; i < 5; ++i) {
    ASSERT_TRUE(so_far[i]) << i;
    ASSERT_FALSE(*so_far[i]) << i;
    EXPECT_EQ(so_far[i]->error(), store::errc::busy) << i;
  }
  const auto all = more.all();
  for (std::size_t i = 0; i < 3; ++i)
    EXPECT_TRUE(all[i]) << "write " << i << " waited, then applied";
}

// Runs the check above with `c` on a fresh data directory (removed after); says whether the
// store was opened under it (the embedded store's `store` directory).
bool opens_a_store_under_the_data_directory(config c) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("parley_backends_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  c.data_dir = dir;
  expect_three_writes_wait_and_the_rest_are_refused(c);
  const bool opened = std::filesystem::exists(dir / "store");
  std::filesystem::remove_all(dir);
  return opened;
}

TEST(backends, the_store_made_lets_max_pending_writes_wait_and_refuses_the_rest) {
  EXPECT_TRUE(opens_a_store_under_the_data_directory(config{})) << "not the embedded store";
}

// The same through make_store's other branch: a store_url makes a PostgreSQL store (on the
// run's test server, a schema of its own), given the same limit; nothing is written under
// the data directory.
TEST(backends, a_store_url_makes_a_postgresql_store_with_the_same_limit) {
  config c;
  c.store_url =
      test_support::postgres_database("backends_" + std::to_string(std::random_device{}()));
  EXPECT_FALSE(opens_a_store_under_the_data_directory(c)) << "an embedded store was opened";
}

}  // namespace
}  // namespace parley::server
