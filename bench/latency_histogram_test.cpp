#include "latency_histogram.hpp"

#include <gtest/gtest.h>

namespace parley::bench {
namespace {

TEST(latency_histogram, exact_below_128_and_within_2_percent_above) {
  for (std::uint64_t v : {0ull, 1ull, 127ull}) {
    EXPECT_EQ(latency_histogram::upper_value_of(latency_histogram::index_of(v)), v);
  }
  for (std::uint64_t v = 128; v < 100'000'000; v = v * 3 / 2 + 7) {
    const auto up = latency_histogram::upper_value_of(latency_histogram::index_of(v));
    EXPECT_GE(up, v);
    EXPECT_LE(static_cast<double>(up - v), 0.016 * static_cast<double>(v)) << v;
  }
}

TEST(latency_histogram, percentiles_of_a_known_distribution) {
  latency_histogram h;
  for (std::uint64_t v = 1; v <= 1000; ++v) h.record(v * 100);  // 100 µs .. 100 ms
  EXPECT_EQ(h.count(), 1000u);
  EXPECT_NEAR(static_cast<double>(h.percentile(0.5)), 50'000, 50'000 * 0.02);
  EXPECT_NEAR(static_cast<double>(h.percentile(0.99)), 99'000, 99'000 * 0.02);
  EXPECT_EQ(h.percentile(1.0), 100'000u);
  EXPECT_EQ(h.max(), 100'000u);
}

TEST(latency_histogram, merge_and_text_round_trip) {
  latency_histogram a, b;
  for (int i = 0; i < 10; ++i) a.record(5);
  b.record(1'000'000);
  a.merge(b);
  latency_histogram c;
  ASSERT_TRUE(c.parse(a.serialize()));
  EXPECT_EQ(c.count(), 11u);
  EXPECT_EQ(c.max(), 1'000'000u);
  EXPECT_EQ(c.percentile(0.5), 5u);
  EXPECT_FALSE(c.parse("garbage"));
}

}  // namespace
}  // namespace parley::bench
