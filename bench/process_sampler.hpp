// CPU time and resident memory of a process, read from /proc (Linux).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace parley::bench {

struct process_sample {
  double cpu_seconds = 0;  // user + system since the process started
  std::uint64_t rss_bytes = 0;
  // The same for each live thread, summed by thread name with a trailing "-N" cut, so that
  // parleyd's "parley-io-0" and "parley-io-1" are one entry "parley-io".
  std::map<std::string, double> thread_cpu_seconds;
  std::chrono::steady_clock::time_point at;
};

// Throws nothing: a sample of a process that is gone is all zeros.
process_sample sample_process(pid_t pid);

// Its resident memory alone (VmRSS, bytes; 0 for a process that is gone): one small read,
// cheap enough to poll a few times a second for a peak.
std::uint64_t resident_bytes(pid_t pid);

// CPU use between two samples, in cores (1.0 = one core busy all the time).
double cores_used(const process_sample& from, const process_sample& to);

// CPU seconds used between two samples per thread name (see process_sample). A thread that
// exited between the samples is missing here but counted in cpu_seconds.
std::map<std::string, double> thread_seconds_used(const process_sample& from,
                                                  const process_sample& to);

// The same in cores (per second of the time between the samples).
std::map<std::string, double> thread_cores_used(const process_sample& from,
                                                const process_sample& to);

}  // namespace parley::bench
