#include "common/snowflake.hpp"

namespace parley {

void snowflake::advance_past(std::uint64_t id) {
  const std::uint64_t ms = id >> (node_bits + sequence_bits);
  const std::uint64_t seq = id & ((1u << sequence_bits) - 1);
  if (ms > last_ms_ || (ms == last_ms_ && seq >= sequence_)) {
    last_ms_ = ms;
    sequence_ = seq + 1;  // may reach 4096: next() then moves to the next millisecond
  }
}

std::uint64_t snowflake::next(std::uint64_t now_ms) {
  std::uint64_t ms = now_ms > epoch_ms ? now_ms - epoch_ms : 0;
  if (ms > last_ms_) {
    last_ms_ = ms;
    sequence_ = 0;
  }
  if (sequence_ >= (1u << sequence_bits)) {  // this millisecond is used up: borrow the next
    ++last_ms_;
    sequence_ = 0;
  }
  const std::uint64_t id =
      (last_ms_ << (node_bits + sequence_bits)) | (node_ << sequence_bits) | sequence_;
  ++sequence_;
  return id;
}

}  // namespace parley
