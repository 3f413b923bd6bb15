// Token buckets keyed by a string (a source address, a device id): `burst` requests at once,
// refilled at `per_minute`. Used for registration, failed logins, key fetches, sends and typing
// (config.hpp, rate_limits).
//
// Bound: at most `max_keys` buckets (64 bytes and the key each). When a shard is full, the
// buckets that have refilled completely are dropped first (they hold no information); if none
// has, the shard is emptied, which forgives its keys a burst: memory stays bounded whatever
// the number of addresses an attacker uses.
//
// Thread-safe: the buckets are split over 16 shards, each with its own mutex; no I/O is done
// under a lock.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "server/config.hpp"

namespace parley::server {

class rate_limiter {
 public:
  using clock = std::chrono::steady_clock;

  explicit rate_limiter(rate_limit limit, std::size_t max_keys = 1u << 16);

  // Takes a token from `key`'s bucket. Returns zero when it had one, else how long until it
  // will (the request is refused and nothing is taken). Always zero when the limit is off.
  std::chrono::milliseconds take(std::string_view key, clock::time_point now = clock::now());

  // Like take(), without taking: how long until `key` has a token (zero: it has one now).
  std::chrono::milliseconds wait_for(std::string_view key, clock::time_point now = clock::now());

  bool enabled() const { return limit_.per_minute > 0; }

 private:
  struct bucket {
    double tokens = 0;
    clock::time_point at;
  };
  struct shard {
    std::mutex mutex;
    std::unordered_map<std::string, bucket> buckets;
  };

  // Refills `b` up to `now`.
  void refill(bucket& b, clock::time_point now) const;
  std::chrono::milliseconds until_one(const bucket& b) const;
  shard& shard_of(std::string_view key);
  std::chrono::milliseconds use(std::string_view key, clock::time_point now, bool take);

  rate_limit limit_;
  double per_ms_;
  std::size_t max_per_shard_;
  std::array<shard, 16> shards_;
};

// The server's limiters, one per rate_limits entry.
struct request_limiters {
  explicit request_limiters(const rate_limits& r)
      : register_per_address(r.register_per_address),
        register_global(r.register_global),
        bad_login_per_address(r.bad_login_per_address),
        key_fetch_per_device(r.key_fetch_per_device),
        one_time_prekey_per_pair(r.one_time_prekey_per_pair),
        send_per_device(r.send_per_device),
        typing_per_device(r.typing_per_device),
        group_change_per_device(r.group_change_per_device),
        group_read_per_device(r.group_read_per_device),
        media_per_device(r.media_per_device) {}

  rate_limiter register_per_address;
  rate_limiter register_global;
  rate_limiter bad_login_per_address;
  rate_limiter key_fetch_per_device;
  rate_limiter one_time_prekey_per_pair;  // keyed "DEVICE USERNAME" (fetcher, owner)
  rate_limiter send_per_device;
  rate_limiter typing_per_device;
  rate_limiter group_change_per_device;
  rate_limiter group_read_per_device;
  rate_limiter media_per_device;
};

}  // namespace parley::server
