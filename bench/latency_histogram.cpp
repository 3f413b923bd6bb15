#include "latency_histogram.hpp"

#include <bit>
#include <sstream>

namespace parley::bench {

std::size_t latency_histogram::index_of(std::uint64_t v) {
  if (v < 128) return static_cast<std::size_t>(v);
  const int shift = std::bit_width(v) - 7;  // v >> shift is in [64, 127]
  const std::size_t i = 128 + static_cast<std::size_t>(shift - 1) * 64 + ((v >> shift) - 64);
  return i < bucket_count ? i : bucket_count - 1;
}

std::uint64_t latency_histogram::upper_value_of(std::size_t index) {
  if (index < 128) return index;
  const std::size_t shift = (index - 128) / 64 + 1;
  const std::uint64_t sub = (index - 128) % 64 + 64;
  return ((sub + 1) << shift) - 1;
}

void latency_histogram::record(std::uint64_t micros) {
  ++buckets_[index_of(micros)];
  ++count_;
  if (micros > max_) max_ = micros;
}

void latency_histogram::merge(const latency_histogram& other) {
  for (std::size_t i = 0; i < bucket_count; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  if (other.max_ > max_) max_ = other.max_;
}

std::uint64_t latency_histogram::percentile(double q) const {
  if (count_ == 0) return 0;
  const auto target = static_cast<std::uint64_t>(q * static_cast<double>(count_ - 1)) + 1;
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    seen += buckets_[i];
    if (seen >= target) {
      const auto v = upper_value_of(i);
      return v < max_ ? v : max_;
    }
  }
  return max_;
}

std::string latency_histogram::serialize() const {
  std::ostringstream out;
  out << count_ << ' ' << max_;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    if (buckets_[i] != 0) out << ' ' << i << ':' << buckets_[i];
  }
  return out.str();
}

bool latency_histogram::parse(const std::string& line) {
  std::istringstream in(line);
  latency_histogram h;
  if (!(in >> h.count_ >> h.max_)) return false;
  std::string pair;
  while (in >> pair) {
    const auto colon = pair.find(':');
    if (colon == std::string::npos) return false;
    const auto i = std::stoull(pair.substr(0, colon));
    if (i >= bucket_count) return false;
    h.buckets_[i] = std::stoull(pair.substr(colon + 1));
  }
  *this = h;
  return true;
}

}  // namespace parley::bench
