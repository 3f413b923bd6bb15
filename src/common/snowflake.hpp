// Snowflake ids: 41 bits of milliseconds since 2026-01-01, 10 bits of node id, 12 bits of
// sequence. Ids are strictly increasing for one generator, even if the wall clock steps back
// (the generator then borrows from the future until the clock catches up).
//
// Not thread-safe: one generator belongs to one thread (the store's writer).
#pragma once

#include <cstdint>

namespace parley {

class snowflake {
 public:
  static constexpr std::uint64_t epoch_ms = 1767225600000ULL;  // 2026-01-01T00:00:00Z
  static constexpr int node_bits = 10;
  static constexpr int sequence_bits = 12;
  static constexpr std::uint64_t max_node = (1u << node_bits) - 1;

  explicit snowflake(std::uint64_t node_id) : node_(node_id & max_node) {}

  // Never issue an id at or below `id` (used after a restart with the stored high-water mark).
  void advance_past(std::uint64_t id);

  // The next id, for wall-clock time `now_ms` (milliseconds since the Unix epoch).
  std::uint64_t next(std::uint64_t now_ms);

  static std::uint64_t time_ms_of(std::uint64_t id) {
    return (id >> (node_bits + sequence_bits)) + epoch_ms;
  }
  // The highest id `node` can issue at wall-clock time `time_ms` (at or after epoch_ms).
  static std::uint64_t max_id_at(std::uint64_t time_ms, std::uint64_t node) {
    return ((time_ms - epoch_ms) << (node_bits + sequence_bits)) |
           ((node & max_node) << sequence_bits) | ((1u << sequence_bits) - 1);
  }

 private:
  std::uint64_t node_;
  std::uint64_t last_ms_ = 0;  // relative to epoch_ms
  std::uint64_t sequence_ = 0;
};

}  // namespace parley
