#include "common/snowflake.hpp"

#include <gtest/gtest.h>

namespace parley {
namespace {

constexpr std::uint64_t t0 = snowflake::epoch_ms + 1'000'000;

TEST(snowflake, ids_increase_within_and_across_milliseconds) {
  snowflake ids(7);
  std::uint64_t last = 0;
  for (int i = 0; i < 10'000; ++i) {  // more than 4,096 in one millisecond: borrows ahead
    const auto id = ids.next(t0);
    ASSERT_GT(id, last);
    last = id;
  }
  EXPECT_GT(ids.next(t0 + 100), last);
}

TEST(snowflake, carries_time_and_node) {
  snowflake ids(5);
  const auto id = ids.next(t0);
  EXPECT_EQ(snowflake::time_ms_of(id), t0);
  EXPECT_EQ((id >> snowflake::sequence_bits) & snowflake::max_node, 5u);
}

TEST(snowflake, clock_stepping_back_never_repeats_an_id) {
  snowflake ids(1);
  const auto before = ids.next(t0 + 5'000);
  const auto after = ids.next(t0);  // the wall clock went back five seconds
  EXPECT_GT(after, before);
}

TEST(snowflake, advance_past_a_stored_high_water_mark) {
  snowflake first(1);
  std::uint64_t high = 0;
  for (int i = 0; i < 100; ++i) high = first.next(t0 + 60'000);
  snowflake restarted(1);
  restarted.advance_past(high);
  EXPECT_GT(restarted.next(t0), high);  // restarted with a clock behind the old ids
}

}  // namespace
}  // namespace parley
