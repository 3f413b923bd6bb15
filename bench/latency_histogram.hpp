// A log-linear latency histogram in the manner of HdrHistogram: exact below 128 µs, then 64
// sub-buckets per power of two (under 1.6 % relative error), up to about 19 hours. Fixed size,
// no allocation when recording, mergeable across processes through a text form.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace parley::bench {

class latency_histogram {
 public:
  static constexpr std::size_t bucket_count = 128 + 30 * 64;

  void record(std::uint64_t micros);
  void merge(const latency_histogram& other);

  std::uint64_t count() const { return count_; }
  std::uint64_t max() const { return max_; }
  // The value at quantile q (0..1), in µs; 0 when empty.
  std::uint64_t percentile(double q) const;

  // One line of numbers; parse() reads it back.
  std::string serialize() const;
  bool parse(const std::string& line);

  static std::size_t index_of(std::uint64_t v);
  static std::uint64_t upper_value_of(std::size_t index);

 private:
  std::array<std::uint64_t, bucket_count> buckets_{};
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace parley::bench
