// Small POSIX file helpers shared by the media code (blob server, blob store, file
// encryption, transfers): a descriptor owner, and positioned reads and writes that finish or
// fail (EINTR retried, short transfers continued).
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

namespace parley::posix {

// Owns a file descriptor; closes it on destruction (errors there are swallowed: call close()
// to see them).
class fd_guard {
 public:
  explicit fd_guard(int fd) noexcept : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  // Closes now, reporting the failure a destructor would have to swallow (a write that only
  // fails at close, as on some network file systems).
  bool close() noexcept { return ::close(std::exchange(fd_, -1)) == 0; }
  // Holds `fd` from now on, closing the one it held.
  void reset(int fd) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// Reads exactly `size` bytes at `offset`; false on an error or a file shorter than that.
inline bool pread_all(int fd, char* data, std::size_t size, std::uint64_t offset) {
  while (size > 0) {
    const ssize_t n = ::pread(fd, data, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
  return true;
}

// Writes exactly `size` bytes at `offset`; false on an error.
inline bool pwrite_all(int fd, const char* data, std::size_t size, std::uint64_t offset) {
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
  return true;
}

inline std::string errno_text() { return std::strerror(errno); }

}  // namespace parley::posix
