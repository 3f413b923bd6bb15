#include "store/rocksdb/pending_queue.hpp"

#include <gtest/gtest.h>

namespace parley::store {
namespace {

TEST(pending_queue, gives_each_entry_once_and_tells_receipts_from_messages) {
  pending_queue q(16);
  q.add(1, 100, 7);  // a message from user 7
  q.add(1, 101, 0);  // a receipt
  q.add(2, 100, 9);  // the same event id on another device is another entry
  EXPECT_EQ(q.take(1, 100), 7u);
  EXPECT_EQ(q.take(1, 100), std::nullopt) << "an entry is taken once";
  EXPECT_EQ(q.take(1, 101), 0u);
  EXPECT_EQ(q.take(2, 100), 9u);
  EXPECT_EQ(q.take(3, 100), std::nullopt);
  EXPECT_EQ(q.size(), 0u);
}

TEST(pending_queue, forgets_the_oldest_beyond_its_capacity_only_when_trimmed) {
  pending_queue q(4);
  for (std::uint64_t e = 1; e <= 10; ++e) q.add(1, e, 100 + e);
  EXPECT_EQ(q.size(), 10u) << "nothing is forgotten within a group";
  q.trim();
  EXPECT_EQ(q.size(), 4u);
  for (std::uint64_t e = 1; e <= 6; ++e) EXPECT_EQ(q.take(1, e), std::nullopt) << e;
  for (std::uint64_t e = 7; e <= 10; ++e) EXPECT_EQ(q.take(1, e), 100 + e) << e;
}

TEST(pending_queue, taken_entries_do_not_count_against_the_capacity_or_grow_the_order) {
  pending_queue q(4);
  q.add(1, 1, 5);  // stays while many others come and go
  for (std::uint64_t e = 2; e < 100'000; ++e) {
    q.add(1, e, 5);
    ASSERT_EQ(q.take(1, e), 5u);
    q.trim();
  }
  EXPECT_EQ(q.take(1, 1), 5u) << "the old entry survived: only live entries count";
  EXPECT_LE(q.order_size(), 2 * q.size() + 1024 + 1);
}

TEST(pending_queue, clear_forgets_everything) {
  pending_queue q(4);
  q.add(1, 1, 5);
  q.clear();
  EXPECT_EQ(q.take(1, 1), std::nullopt);
  EXPECT_EQ(q.size(), 0u);
}

}  // namespace
}  // namespace parley::store
