#include "process_sampler.hpp"

#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace parley::bench {
namespace {

// Two threads named "burner-0" and "burner-1" spin while the test samples its own process:
// their CPU time is reported under one entry "burner", and none under the raw names.
TEST(process_sampler, groups_threads_by_name_without_the_index) {
  std::atomic<bool> stop{false};
  std::atomic<int> named{0};
  auto burn = [&](const char* name) {
    ::pthread_setname_np(::pthread_self(), name);
    ++named;
    volatile std::uint64_t sink = 0;
    while (!stop.load(std::memory_order_relaxed)) sink = sink + 1;
  };
  std::thread a(burn, "burner-0"), b(burn, "burner-1");
  while (named.load() < 2) std::this_thread::yield();

  const auto from = sample_process(::getpid());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto to = sample_process(::getpid());
  stop = true;
  a.join();
  b.join();

  const auto cores = thread_cores_used(from, to);
  ASSERT_TRUE(cores.contains("burner"));
  EXPECT_FALSE(cores.contains("burner-0"));
  EXPECT_FALSE(cores.contains("burner-1"));
  // Two spinning threads on a shared machine: well above zero, at most the two of them (the
  // clock ticks at 100 Hz, hence the slack).
  EXPECT_GT(cores.at("burner"), 0.2);
  EXPECT_LT(cores.at("burner"), 2.2);
  EXPECT_GE(cores_used(from, to), cores.at("burner") - 0.1);
  EXPECT_GT(to.rss_bytes, 0u);
}

// Names whose last part is not a number stay whole.
TEST(process_sampler, keeps_names_without_a_numeric_suffix) {
  std::atomic<bool> stop{false};
  std::atomic<bool> named{false};
  std::thread t([&] {
    ::pthread_setname_np(::pthread_self(), "rocksdb:low");
    named = true;
    while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  while (!named.load()) std::this_thread::yield();
  const auto s = sample_process(::getpid());
  stop = true;
  t.join();
  EXPECT_TRUE(s.thread_cpu_seconds.contains("rocksdb:low"));
}

}  // namespace
}  // namespace parley::bench
