// The token buckets behind every [rate_limits] entry: the burst, the refill, a limit that is
// off, and the bound on how many keys they remember (rate_limiter.hpp).
#include "server/rate_limiter.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace parley::server {
namespace {

using namespace std::chrono_literals;
using clock = rate_limiter::clock;

TEST(rate_limiter, a_burst_then_one_per_refill) {
  rate_limiter limiter(rate_limit{60, 3});  // 3 at once, then one a second
  const auto t0 = clock::now();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(limiter.take("a", t0).count(), 0) << i;
  const auto wait = limiter.take("a", t0);
  EXPECT_GT(wait, 0ms);
  EXPECT_LE(wait, 1000ms);
  EXPECT_EQ(limiter.take("b", t0).count(), 0) << "another key has its own bucket";
  EXPECT_GT(limiter.take("a", t0 + 500ms), 0ms) << "half a token is not one";
  EXPECT_EQ(limiter.take("a", t0 + 1s).count(), 0);
  EXPECT_GT(limiter.take("a", t0 + 1s), 0ms);
  // wait_for() looks without taking.
  EXPECT_EQ(limiter.wait_for("a", t0 + 2s).count(), 0);
  EXPECT_EQ(limiter.wait_for("a", t0 + 2s).count(), 0);
  EXPECT_EQ(limiter.take("a", t0 + 2s).count(), 0);
  EXPECT_GT(limiter.wait_for("a", t0 + 2s), 0ms);
  // A bucket refills to its burst, no further.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(limiter.take("a", t0 + 1h).count(), 0) << i;
  EXPECT_GT(limiter.take("a", t0 + 1h), 0ms);
}

TEST(rate_limiter, a_limit_of_zero_is_off) {
  rate_limiter limiter(rate_limit{0, 1});
  EXPECT_FALSE(limiter.enabled());
  const auto t0 = clock::now();
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(limiter.take("a", t0).count(), 0) << i;
}

// Keys that fall in one shard (the limiter hashes a key with std::hash over 16 shards), so
// that a test can fill one shard's share of max_keys.
std::vector<std::string> keys_of_one_shard(std::size_t n) {
  std::vector<std::string> out;
  const std::size_t shard = std::hash<std::string_view>{}("k0") % 16;
  for (int i = 0; out.size() < n; ++i) {
    std::string k = "k" + std::to_string(i);
    if (std::hash<std::string_view>{}(k) % 16 == shard) out.push_back(std::move(k));
  }
  return out;
}

// At most max_keys buckets (max_keys / 16 a shard): a shard that is full first forgets the
// buckets that refilled (they hold nothing), and only if none has, every key of the shard.
TEST(rate_limiter, a_full_shard_forgets_refilled_buckets_first_then_all) {
  rate_limiter limiter(rate_limit{60, 2}, 32);  // 2 buckets a shard; a token a second
  const auto keys = keys_of_one_shard(4);
  const std::string &x = keys[0], &y = keys[1], &z = keys[2], &w = keys[3];
  const auto t0 = clock::now();
  ASSERT_EQ(limiter.take(x, t0).count(), 0);
  ASSERT_EQ(limiter.take(y, t0).count(), 0);
  ASSERT_EQ(limiter.take(y, t0).count(), 0);
  ASSERT_GT(limiter.take(y, t0), 0ms) << "y is used up";

  // 1.5 s on, x is full again and y half refilled: a third key forgets x, not y.
  const auto t1 = t0 + 1500ms;
  ASSERT_EQ(limiter.take(z, t1).count(), 0);
  EXPECT_EQ(limiter.take(y, t1).count(), 0);
  EXPECT_GT(limiter.take(y, t1), 0ms) << "y's state was kept: 1.5 tokens, not a full bucket";

  // Now neither y nor z is full: a fourth key empties the shard, which forgives y.
  ASSERT_EQ(limiter.take(w, t1).count(), 0);
  EXPECT_EQ(limiter.take(y, t1).count(), 0) << "y starts again with a full bucket";
  EXPECT_EQ(limiter.take(y, t1).count(), 0);
  EXPECT_GT(limiter.take(y, t1), 0ms);
}

// A key that is only looked at (wait_for) takes no bucket: it has a full one.
TEST(rate_limiter, looking_at_an_unknown_key_keeps_nothing) {
  rate_limiter limiter(rate_limit{60, 1}, 16);  // one bucket a shard
  const auto keys = keys_of_one_shard(2);
  const auto t0 = clock::now();
  ASSERT_EQ(limiter.take(keys[0], t0).count(), 0);
  ASSERT_GT(limiter.take(keys[0], t0), 0ms);
  EXPECT_EQ(limiter.wait_for(keys[1], t0).count(), 0);
  EXPECT_GT(limiter.take(keys[0], t0), 0ms) << "the shard was not emptied by a look";
}

}  // namespace
}  // namespace parley::server
