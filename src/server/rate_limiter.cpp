#include "server/rate_limiter.hpp"

#include <algorithm>
#include <cmath>
#include <functional>

namespace parley::server {

rate_limiter::rate_limiter(rate_limit limit, std::size_t max_keys)
    : limit_(limit),
      per_ms_(limit.per_minute / 60'000.0),
      max_per_shard_(std::max<std::size_t>(max_keys / 16, 1)) {
  limit_.burst = std::max(limit_.burst, 1.0);
}

void rate_limiter::refill(bucket& b, clock::time_point now) const {
  if (now <= b.at) return;
  const double ms = std::chrono::duration<double, std::milli>(now - b.at).count();
  b.tokens = std::min(limit_.burst, b.tokens + ms * per_ms_);
  b.at = now;
}

std::chrono::milliseconds rate_limiter::until_one(const bucket& b) const {
  if (b.tokens >= 1) return std::chrono::milliseconds(0);
  // At least 1 ms, so that a refusal never reads as "go ahead".
  return std::chrono::milliseconds(
      std::max<long long>(1, static_cast<long long>(std::ceil((1 - b.tokens) / per_ms_))));
}

rate_limiter::shard& rate_limiter::shard_of(std::string_view key) {
  return shards_[std::hash<std::string_view>{}(key) % shards_.size()];
}

std::chrono::milliseconds rate_limiter::use(std::string_view key, clock::time_point now,
                                            bool take) {
  if (!enabled()) return std::chrono::milliseconds(0);
  shard& s = shard_of(key);
  std::lock_guard lock(s.mutex);
  auto it = s.buckets.find(std::string(key));
  if (it == s.buckets.end()) {
    if (!take) return std::chrono::milliseconds(0);  // an unknown key has a full bucket
    if (s.buckets.size() >= max_per_shard_) {
      for (auto full = s.buckets.begin(); full != s.buckets.end();) {
        refill(full->second, now);
        full = full->second.tokens >= limit_.burst ? s.buckets.erase(full) : std::next(full);
      }
      if (s.buckets.size() >= max_per_shard_) s.buckets.clear();
    }
    it = s.buckets.emplace(std::string(key), bucket{limit_.burst, now}).first;
  }
  bucket& b = it->second;
  refill(b, now);
  const auto wait = until_one(b);
  if (take && wait.count() == 0) b.tokens -= 1;
  return wait;
}

std::chrono::milliseconds rate_limiter::take(std::string_view key, clock::time_point now) {
  return use(key, now, true);
}

std::chrono::milliseconds rate_limiter::wait_for(std::string_view key, clock::time_point now) {
  return use(key, now, false);
}

}  // namespace parley::server
