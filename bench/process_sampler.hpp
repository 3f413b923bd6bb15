// CPU time and resident memory of a process, read from /proc (Linux).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>

namespace parley::bench {

struct process_sample {
  double cpu_seconds = 0;  // user + system since the process started
  std::uint64_t rss_bytes = 0;
  std::chrono::steady_clock::time_point at;
};

// Throws nothing: a sample of a process that is gone is all zeros.
process_sample sample_process(pid_t pid);

// CPU use between two samples, in cores (1.0 = one core busy all the time).
double cores_used(const process_sample& from, const process_sample& to);

}  // namespace parley::bench
