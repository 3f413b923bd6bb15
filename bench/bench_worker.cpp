#include "bench_worker.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>

namespace parley::bench {
namespace {

void write_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

// Reads one line from fd into `line` using `buffer` for leftovers; false at end of file.
bool read_line(int fd, std::string& buffer, std::string& line) {
  for (;;) {
    const auto nl = buffer.find('\n');
    if (nl != std::string::npos) {
      line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      return true;
    }
    char chunk[65536];
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
}

}  // namespace

void worker_channel::send(const std::string& line) { write_all(out_, line + "\n"); }

std::string worker_channel::receive() {
  std::string line;
  return read_line(in_, buffer_, line) ? line : std::string();
}

worker_pool::worker_pool(int count, const std::function<int(int, worker_channel&)>& body) {
  std::fflush(nullptr);
  for (int i = 0; i < count; ++i) {
    int down[2], up[2];
    if (::pipe(down) != 0 || ::pipe(up) != 0) throw std::runtime_error("pipe failed");
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      ::close(down[1]);
      ::close(up[0]);
      for (auto& w : workers_) {
        ::close(w.to_child);
        ::close(w.from_child);
      }
      worker_channel channel(down[0], up[1]);
      int rc = 1;
      try {
        rc = body(i, channel);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "parley-bench worker %d: %s\n", i, e.what());
        channel.send("error " + std::string(e.what()));
      }
      std::fflush(nullptr);
      ::_exit(rc);
    }
    ::close(down[0]);
    ::close(up[1]);
    workers_.push_back({pid, down[1], up[0], {}});
  }
}

worker_pool::~worker_pool() {
  for (auto& w : workers_) {
    if (w.pid > 0) {
      ::kill(w.pid, SIGKILL);
      ::waitpid(w.pid, nullptr, 0);
    }
    if (w.to_child >= 0) ::close(w.to_child);
    if (w.from_child >= 0) ::close(w.from_child);
  }
}

std::vector<std::string> worker_pool::collect() {
  std::vector<std::string> lines;
  for (auto& w : workers_) {
    std::string line;
    if (!read_line(w.from_child, w.buffer, line)) throw std::runtime_error("a worker died");
    if (line.rfind("error ", 0) == 0) throw std::runtime_error("worker: " + line.substr(6));
    lines.push_back(line);
  }
  return lines;
}

void worker_pool::broadcast(const std::string& line) {
  for (auto& w : workers_) write_all(w.to_child, line + "\n");
}

bool worker_pool::join() {
  bool ok = true;
  for (auto& w : workers_) {
    ::close(w.to_child);
    w.to_child = -1;
    int status = 0;
    ::waitpid(w.pid, &status, 0);
    w.pid = -1;
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  return ok;
}

}  // namespace parley::bench
