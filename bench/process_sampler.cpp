#include "process_sampler.hpp"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

namespace parley::bench {

process_sample sample_process(pid_t pid) {
  process_sample s;
  s.at = std::chrono::steady_clock::now();
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (std::getline(stat, line)) {
    // Fields after the command name, which is in parentheses and may hold spaces.
    std::istringstream in(line.substr(line.rfind(')') + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && in >> field; ++i) {
      if (i == 14) utime = std::stoull(field);
      if (i == 15) stime = std::stoull(field);
    }
    s.cpu_seconds =
        static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      std::uint64_t kb = 0;
      status >> kb;
      s.rss_bytes = kb * 1024;
      break;
    }
    std::getline(status, line);
  }
  return s;
}

double cores_used(const process_sample& from, const process_sample& to) {
  const double wall = std::chrono::duration<double>(to.at - from.at).count();
  return wall > 0 ? (to.cpu_seconds - from.cpu_seconds) / wall : 0;
}

}  // namespace parley::bench
