// A store writer's queue: requests pushed from any thread, taken in groups by the one writer
// thread that owns the queue. The RocksDB and the PostgreSQL store share it: their writers
// differ in what they do with a group, not in how they wait for one.
//
// Bounded: a push is refused (busy) while `count`, a counter the store may share between the
// queues of its several writers, is at `max_pending`; the store answers BUSY then. After stop()
// every push is refused (stopping), and the writer still takes what was queued before it, then
// take() says the queue is done.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <utility>
#include <vector>

namespace parley::store {

template <class Command>
class write_queue {
 public:
  enum class pushed { queued, busy, stopping };
  enum class taken { work, idle, done };

  // Any thread. Moves `c` in only when it returns queued (the caller refuses it otherwise).
  pushed push(Command& c, std::atomic<std::uint64_t>& count, std::uint64_t max_pending) {
    std::lock_guard lock(mutex_);
    if (stopping_) return pushed::stopping;
    if (count.load(std::memory_order_relaxed) >= max_pending) return pushed::busy;
    pending_.push_back(std::move(c));
    count.fetch_add(1, std::memory_order_relaxed);
    wake_.notify_one();
    return pushed::queued;
  }

  // The writer thread. Waits up to `idle` for requests and appends up to `max_group` of them
  // to `work` (work: some were taken; idle: none came in time, the writer may do its
  // housekeeping; done: stopped and nothing is left).
  taken take(std::vector<Command>& work, std::size_t max_group, std::chrono::milliseconds idle,
             std::atomic<std::uint64_t>& count) {
    std::unique_lock lock(mutex_);
    if (!wake_.wait_for(lock, idle, [&] { return stopping_ || !pending_.empty(); })) {
      return taken::idle;
    }
    if (pending_.empty()) return taken::done;  // stopping, and everything queued is done
    const std::size_t before = work.size();
    while (!pending_.empty() && work.size() < max_group) {
      work.push_back(std::move(pending_.front()));
      pending_.pop_front();
    }
    count.fetch_sub(work.size() - before, std::memory_order_relaxed);
    return taken::work;
  }

  // Refuses pushes from now on and wakes the writer. Returns false if already stopped.
  bool stop() {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return false;
      stopping_ = true;
    }
    wake_.notify_all();
    return true;
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Command> pending_;
  bool stopping_ = false;
};

}  // namespace parley::store
