// Server counters and the store write-latency histogram, rendered in the Prometheus text
// format at GET /metrics. Every member is safe to update from any thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace parley::server {

class latency_histogram {
 public:
  // Upper bounds in seconds; the last bucket is +Inf.
  static constexpr std::array<double, 14> bounds = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};
  void observe(std::chrono::nanoseconds d);
  void render(std::string& out, const char* name, const char* help) const;

 private:
  std::array<std::atomic<std::uint64_t>, bounds.size() + 1> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_ns_{0};
};

struct metrics {
  std::atomic<std::int64_t> connections{0};  // open WebSocket connections
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> frames_in{0};
  std::atomic<std::uint64_t> frames_out{0};
  std::atomic<std::uint64_t> bad_frames{0};
  std::atomic<std::uint64_t> messages_stored{0};
  std::atomic<std::uint64_t> slow_readers_closed{0};
  std::atomic<std::uint64_t> gap_rereads{0};  // pushes that found a gap: the log read again
  // Cluster: a chat's first pushes on a connection, each checked with a read of the cursor.
  std::atomic<std::uint64_t> first_push_checks{0};
  std::atomic<std::uint64_t> group_commits{0};
  std::atomic<std::uint64_t> group_commit_requests{0};
  std::atomic<std::uint64_t> connections_refused{0};  // over a connection limit
  // Of those, refused because their source held max_unauthenticated_per_address.
  std::atomic<std::uint64_t> connections_refused_per_address{0};
  std::atomic<std::uint64_t> connections_shed{0};     // dropped by the memory budget
  std::atomic<std::uint64_t> rate_limited{0};         // requests refused with RATE_LIMITED
  std::atomic<std::uint64_t> store_busy{0};           // writes refused with BUSY
  std::atomic<std::uint64_t> auth_failures{0};
  latency_histogram store_write_latency;

  // What the rest of the server knows at render time.
  struct gauges {
    std::uint64_t pending_writes = 0;  // requests waiting for the store's writer
    bool store_writable = true;
    std::uint64_t buffered_bytes = 0;    // held by all connections (admission)
    std::uint64_t open_connections = 0;  // TCP connections, HTTP and WebSocket
    std::uint64_t max_connections = 0;
  };
  std::string render(const gauges& g) const;
};

}  // namespace parley::server
