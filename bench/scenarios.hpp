// The scenarios of parley-bench. Each drives a server it did not start (the caller spawns it
// and passes its URL and pid) and returns what it measured; nothing here prints.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "latency_histogram.hpp"

namespace parley::bench {

struct target {
  std::string url;
  pid_t pid = -1;  // sampled from /proc during each step
  int procs = 2;   // worker processes of the generator
};

struct connect_result {
  std::size_t wanted = 0, connected = 0, failed = 0;
  double seconds = 0;  // first connect to last authenticated
  double connects_per_second = 0;
  std::uint64_t rss_before = 0, rss_after = 0;
  double rss_per_connection = 0;  // bytes, marginal
  double idle_server_cores = 0;   // while holding them all
  // CPU time spent during the ramp, by the server and by all generator workers together.
  double ramp_server_cpu_seconds = 0, ramp_generator_cpu_seconds = 0;
};

struct step_result {
  double offered_rate = 0;
  double seconds = 0;
  std::uint64_t sent = 0, stored = 0, received = 0, errors = 0, skipped = 0;
  std::uint64_t lost = 0;     // stored (✓) but never received
  latency_histogram latency;  // send -> receive, µs
  double server_cores = 0;
  std::uint64_t server_rss = 0;
  std::map<std::string, double> server_thread_cores;  // by thread name ("store-writer", ...)
  double generator_cores = 0;        // busiest worker
  double generator_total_cores = 0;  // all workers together
  bool generator_bound = false;      // the generator fell behind its schedule
  double delivered_rate() const {
    return seconds > 0 ? static_cast<double>(received) / seconds : 0;
  }
  // Microseconds of CPU time per message stored in this step, for `cores` busy over it.
  double cpu_us_per_message(double cores) const {
    return stored > 0 ? cores * seconds * 1e6 / static_cast<double>(stored) : 0;
  }
};

struct one_to_one_result {
  std::size_t users = 0;
  std::vector<step_result> steps;
  double sustainable_rate = 0;  // highest offered rate with p99 < 100 ms, nothing lost
};

struct drain_result {
  std::size_t queued = 0, received = 0;
  bool in_order = false;
  double milliseconds = 0;  // connect -> last message
};

struct baseline_result {
  std::size_t connections = 0;
  double seconds = 0;
  std::uint64_t round_trips = 0;
  double rate = 0;  // round trips per second
  latency_histogram latency;
  double server_cores = 0;
  double generator_cores = 0;  // all workers together
};

connect_result run_connect(const target& t, std::size_t connections, double hold_seconds);
one_to_one_result run_one_to_one(const target& t, std::size_t users,
                                 const std::vector<double>& rates, double step_seconds);
drain_result run_drain(const target& t, std::size_t messages);
baseline_result run_baseline(const target& t, std::size_t connections, int window, double seconds);

}  // namespace parley::bench
