// Waiting for Store completions in tests: one call (wait_for), or many in flight at once
// (in_flight); holding a store's writer so that requests share one commit (writer_gate).
// Shared by the contract suite and the stores' own tests.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "store/store.hpp"

namespace parley::store::test_calls {

// How long a test waits for a completion before it gives up (a lost completion must fail the
// test, not hang the suite).
constexpr auto completion_deadline = std::chrono::seconds(60);

// Runs one store call and waits for its completion. The promise is shared with the completion,
// so that one arriving after the deadline touches nothing freed.
template <class T, class Call>
result<T> wait_for(Call call) {
  auto p = std::make_shared<std::promise<result<T>>>();
  auto f = p->get_future();
  call([p](result<T> r) { p->set_value(std::move(r)); });
  if (f.wait_for(completion_deadline) != std::future_status::ready)
    throw std::runtime_error("a store call did not complete within 60 s");
  return f.get();
}

// Many calls in flight at once: slot() is the completion of the next call; the results come
// back in the order the calls were made, completion_order() in the order their completions ran.
// Each completion must run exactly once, on a thread that is not the test's.
template <class T>
class in_flight {
 public:
  completion<T> slot() {
    std::lock_guard lock(s_->m);
    const std::size_t i = s_->results.size();
    s_->results.emplace_back();
    return [s = s_, i](result<T> r) {
      std::lock_guard lock(s->m);
      if (s->results[i]) {
        ADD_FAILURE() << "the completion of call " << i << " ran twice";
        return;
      }
      s->results[i].emplace(std::move(r));
      s->order.push_back(i);
      if (std::this_thread::get_id() == s->caller)
        ADD_FAILURE() << "the completion of call " << i << " ran on the caller's thread";
      s->cv.notify_all();
    };
  }

  // Waits until `n` completions ran; false at the deadline.
  bool wait_until_completed(std::size_t n, std::chrono::seconds deadline = completion_deadline) {
    std::unique_lock lock(s_->m);
    return s_->cv.wait_for(lock, deadline, [&] { return s_->order.size() >= n; });
  }

  // Every result, in call order, once all completions ran.
  std::vector<result<T>> all() {
    std::size_t n = 0;
    {
      std::lock_guard lock(s_->m);
      n = s_->results.size();
    }
    if (!wait_until_completed(n))
      throw std::runtime_error("store calls did not complete within 60 s");
    std::lock_guard lock(s_->m);
    std::vector<result<T>> out;
    out.reserve(n);
    for (auto& r : s_->results) out.push_back(*r);
    return out;
  }

  std::vector<std::size_t> completion_order() {
    std::lock_guard lock(s_->m);
    return s_->order;
  }

  // The results of the calls completed so far (nullopt for the others), in call order.
  std::vector<std::optional<result<T>>> so_far() {
    std::lock_guard lock(s_->m);
    return s_->results;
  }

 private:
  struct state {
    std::mutex m;
    std::condition_variable cv;
    std::vector<std::optional<result<T>>> results;
    std::vector<std::size_t> order;
    std::thread::id caller = std::this_thread::get_id();
  };
  std::shared_ptr<state> s_ = std::make_shared<state>();
};

// Holds a store's writer in its first commit after arm(), until open(): requests made
// meanwhile queue, and share the next commit. Install hook() as the store's after-commit
// observer (the contract suite's tuning::after_commit, a PostgreSQL store's on_commit) before
// opening the store. The destructor opens it, so the writer is let go before the store is
// destroyed, whatever the test did.
class writer_gate {
 public:
  writer_gate() = default;
  writer_gate(const writer_gate&) = delete;
  writer_gate& operator=(const writer_gate&) = delete;
  ~writer_gate() { open(); }

  std::function<void()> hook() {
    return [s = s_] {
      std::unique_lock lock(s->m);
      if (!s->armed || s->blocked) return;
      s->blocked = true;
      s->cv.notify_all();
      s->cv.wait(lock, [&] { return s->open; });
    };
  }
  void arm() {
    std::lock_guard lock(s_->m);
    s_->armed = true;
  }
  // Whether the writer is held (false if it did not commit within the deadline).
  bool wait_until_held() {
    std::unique_lock lock(s_->m);
    return s_->cv.wait_for(lock, completion_deadline, [&] { return s_->blocked; });
  }
  void open() {
    std::lock_guard lock(s_->m);
    s_->open = true;
    s_->cv.notify_all();
  }

 private:
  struct state {
    std::mutex m;
    std::condition_variable cv;
    bool armed = false, blocked = false, open = false;
  };
  std::shared_ptr<state> s_ = std::make_shared<state>();
};

}  // namespace parley::store::test_calls
