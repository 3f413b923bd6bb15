// Names a thread as `top -H`, /proc/PID/task/TID/comm and parley-bench show it. Named by its
// creator right after std::thread starts it, so the name is in place before the creator
// returns. Linux keeps at most 15 bytes; longer names are cut there. The names parleyd uses
// are part of the operator's view (docs/operations.md) and of parley-bench's CPU split: keep
// them stable.
#pragma once

#include <pthread.h>

#include <string>
#include <string_view>
#include <thread>

namespace parley {

inline void name_thread(std::thread& thread, std::string_view name) {
  std::string cut(name.substr(0, 15));
  ::pthread_setname_np(thread.native_handle(), cut.c_str());
}

}  // namespace parley
