#include "common/small_function.hpp"

#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <vector>

namespace parley {
namespace {

// Counts the live copies of what a task captures, to check that moves and destruction
// neither leak nor destroy twice.
struct tracked {
  explicit tracked(int& live) : live(&live) { ++live; }
  tracked(tracked&& o) noexcept : live(o.live) { ++*live; }
  tracked(const tracked& o) : live(o.live) { ++*live; }
  tracked& operator=(const tracked&) = delete;
  ~tracked() { --*live; }
  int* live;
};

TEST(small_task, small_callables_are_held_inline_and_large_ones_on_the_heap) {
  auto session = std::make_shared<int>(1);
  auto small = [s = session, e = session] { return *s + *e; };
  static_assert(small_task::fits<decltype(small)>());
  std::array<char, small_task::inline_bytes + 1> big{};
  auto large = [big] { return big[0]; };
  static_assert(!small_task::fits<decltype(large)>());
}

TEST(small_task, runs_moves_and_destroys_what_it_holds_once) {
  for (const bool large : {false, true}) {
    int live = 0;
    int calls = 0;
    {
      std::vector<small_task> tasks;
      for (int i = 0; i < 100; ++i) {  // the vector grows: every task is moved several times
        if (large) {
          std::array<char, 200> pad{};
          tasks.emplace_back([t = tracked(live), &calls, pad] { calls += 1 + pad[0]; });
        } else {
          tasks.emplace_back([t = tracked(live), &calls] { ++calls; });
        }
      }
      EXPECT_EQ(live, 100) << (large ? "large" : "small");
      small_task moved = std::move(tasks[3]);
      EXPECT_FALSE(tasks[3]);
      EXPECT_TRUE(moved);
      moved();
      tasks[3] = std::move(moved);
      tasks[4] = std::move(tasks[3]);  // replaces (destroys) what tasks[4] held
      EXPECT_EQ(live, 99) << (large ? "large" : "small");
      for (auto& t : tasks) {
        if (t) t();
      }
      EXPECT_EQ(calls, 100) << (large ? "large" : "small");
    }
    EXPECT_EQ(live, 0) << (large ? "large" : "small");
  }
}

TEST(small_function, passes_arguments_and_returns_results) {
  auto base = std::make_shared<int>(40);
  small_function<int(int, std::unique_ptr<int>)> add = [base](int a, std::unique_ptr<int> b) {
    return *base + a + *b;
  };
  EXPECT_EQ(add(1, std::make_unique<int>(1)), 42);
  small_function<int(int, std::unique_ptr<int>)> moved = std::move(add);
  EXPECT_FALSE(add);
  EXPECT_EQ(moved(2, std::make_unique<int>(2)), 44);
  EXPECT_EQ(base.use_count(), 2) << "held once, by `moved`";
}

}  // namespace
}  // namespace parley
