#include "process_sampler.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace parley::bench {

namespace {

// utime + stime of a /proc/.../stat file, in seconds; 0 if it cannot be read.
double stat_cpu_seconds(const std::string& path) {
  std::ifstream stat(path);
  std::string line;
  if (!std::getline(stat, line) || line.rfind(')') == std::string::npos) return 0;
  // Fields after the command name, which is in parentheses and may hold spaces.
  std::istringstream in(line.substr(line.rfind(')') + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// "parley-io-1" -> "parley-io"; names without a numeric suffix stay as they are.
std::string thread_group(std::string name) {
  const auto dash = name.rfind('-');
  if (dash == std::string::npos || dash + 1 == name.size()) return name;
  for (std::size_t i = dash + 1; i < name.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return name;
  }
  return name.substr(0, dash);
}

}  // namespace

process_sample sample_process(pid_t pid) {
  process_sample s;
  s.at = std::chrono::steady_clock::now();
  const std::string dir = "/proc/" + std::to_string(pid);
  s.cpu_seconds = stat_cpu_seconds(dir + "/stat");
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(dir + "/task", ec)) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (!std::getline(comm, name)) continue;  // the thread just exited
    s.thread_cpu_seconds[thread_group(name)] += stat_cpu_seconds((task.path() / "stat").string());
  }
  s.rss_bytes = resident_bytes(pid);
  return s;
}

std::uint64_t resident_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string key, line;
  while (status >> key) {
    if (key == "VmRSS:") {
      std::uint64_t kb = 0;
      status >> kb;
      return kb * 1024;
    }
    std::getline(status, line);
  }
  return 0;
}

double cores_used(const process_sample& from, const process_sample& to) {
  const double wall = std::chrono::duration<double>(to.at - from.at).count();
  return wall > 0 ? (to.cpu_seconds - from.cpu_seconds) / wall : 0;
}

std::map<std::string, double> thread_seconds_used(const process_sample& from,
                                                  const process_sample& to) {
  std::map<std::string, double> out;
  for (const auto& [name, seconds] : to.thread_cpu_seconds) {
    const auto before = from.thread_cpu_seconds.find(name);
    const double start = before == from.thread_cpu_seconds.end() ? 0 : before->second;
    out[name] = std::max(0.0, seconds - start);
  }
  return out;
}

std::map<std::string, double> thread_cores_used(const process_sample& from,
                                                const process_sample& to) {
  const double wall = std::chrono::duration<double>(to.at - from.at).count();
  if (wall <= 0) return {};
  auto out = thread_seconds_used(from, to);
  for (auto& [name, used] : out) used /= wall;
  return out;
}

}  // namespace parley::bench
