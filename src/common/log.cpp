#include "common/log.hpp"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace parley {
namespace {
std::atomic<log_level> g_level{log_level::info};
std::mutex g_mutex;
constexpr const char* level_names[] = {"debug", "info", "warn", "error"};
}  // namespace

void set_log_level(log_level level) { g_level = level; }
bool log_enabled(log_level level) { return level >= g_level.load(std::memory_order_relaxed); }

void write_log_line(log_level level, std::string_view line) {
  std::lock_guard lock(g_mutex);
  std::fprintf(stderr, "[%s] %.*s\n", level_names[static_cast<int>(level)],
               static_cast<int>(line.size()), line.data());
}

}  // namespace parley
