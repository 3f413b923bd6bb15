// Work bound for one I/O thread, coalesced: everything handed to a lane while a flush is
// pending runs in that one flush, so that a group commit that completes requests and pushes
// for many connections costs one post per I/O thread, not one per frame. FIFO: tasks run in
// the order they were added, so commit order is kept on every connection. Tasks are
// small_tasks: the usual ones (a session and an envelope, a session and a result) are held
// in the lane's vector itself, not each in an allocation of its own.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/post.hpp>
#include <mutex>
#include <utility>
#include <vector>

#include "common/small_function.hpp"

namespace parley::server {

class delivery_lane {
 public:
  explicit delivery_lane(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}

  const boost::asio::any_io_executor& executor() const { return executor_; }

  // Any thread. `task` runs on the lane's executor.
  void post(small_task task) {
    {
      std::lock_guard lock(mutex_);
      pending_.push_back(std::move(task));
      if (posted_) return;
      posted_ = true;
    }
    boost::asio::post(executor_, [this] { flush(); });
  }

 private:
  // Runs on the executor, one flush at a time: a flush is posted only while none is pending,
  // and the executor is one I/O thread's. The two vectors trade places, so both keep their
  // capacity and a steady load adds tasks without growing a vector each time.
  void flush() {
    {
      std::lock_guard lock(mutex_);
      running_.swap(pending_);
      posted_ = false;
    }
    for (auto& t : running_) t();
    running_.clear();
  }

  boost::asio::any_io_executor executor_;
  std::mutex mutex_;
  std::vector<small_task> pending_;
  std::vector<small_task> running_;  // flush()'s, on the executor only
  bool posted_ = false;
};

}  // namespace parley::server
