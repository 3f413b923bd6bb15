// Minimal line logger to stderr: one line per call, never interleaved between threads.
//   log_info() << "listening on " << endpoint;
#pragma once

#include <sstream>
#include <string_view>

namespace parley {

enum class log_level { debug, info, warn, error };

void set_log_level(log_level level);
bool log_enabled(log_level level);
void write_log_line(log_level level, std::string_view line);

class log_line {
 public:
  explicit log_line(log_level level) : level_(level), enabled_(log_enabled(level)) {}
  ~log_line() {
    if (enabled_) write_log_line(level_, stream_.str());
  }
  log_line(const log_line&) = delete;
  log_line& operator=(const log_line&) = delete;

  template <class T>
  log_line& operator<<(const T& v) {
    if (enabled_) stream_ << v;
    return *this;
  }

 private:
  log_level level_;
  bool enabled_;
  std::ostringstream stream_;
};

inline log_line log_debug() { return log_line(log_level::debug); }
inline log_line log_info() { return log_line(log_level::info); }
inline log_line log_warn() { return log_line(log_level::warn); }
inline log_line log_error() { return log_line(log_level::error); }

}  // namespace parley
