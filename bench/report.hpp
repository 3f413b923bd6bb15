// parley-bench's output: a table for people, a JSON file per run, and a PNG plot (gnuplot).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "scenarios.hpp"

namespace parley::bench {

struct run_report {
  std::string started_at;  // UTC, ISO 8601
  std::string mode;        // "quick", "full" or "smoke"
  int procs = 0;
  unsigned server_threads = 0;
  bool fsync = true;
  std::optional<connect_result> connect;
  std::optional<one_to_one_result> one_to_one;
  std::optional<drain_result> drain;
  std::optional<baseline_result> baseline;
  std::optional<fanout_result> fanout;
  std::optional<media_result> media;
  std::optional<cluster_result> cluster;
};

std::string render_table(const run_report& r);
std::string render_json(const run_report& r);

// Writes DIR/<stamp>.json, DIR/latest.json and, when gnuplot is installed and the one-to-one
// scenario ran, DIR/<stamp>-one-to-one.png and DIR/latest-one-to-one.png. Returns the paths
// written, one per line.
std::string write_results(const run_report& r, const std::filesystem::path& dir);

}  // namespace parley::bench
