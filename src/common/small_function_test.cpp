#include "common/small_function.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
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

// Where a callable lives: it records the address it is called at.
struct where {
  const void** at;
  void operator()() const { *at = this; }
};
struct where_large {
  const void** at;
  std::array<char, small_function<void()>::inline_bytes> pad{};
  void operator()() const { *at = this; }
};

bool inside(const void* p, const small_task& f) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const auto begin = reinterpret_cast<std::uintptr_t>(&f);
  return a >= begin && a < begin + sizeof f;
}

TEST(small_function, a_small_callable_lives_in_the_object_and_a_large_one_does_not) {
  const void* at = nullptr;
  small_task inline_one = where{&at};
  inline_one();
  EXPECT_TRUE(inside(at, inline_one));
  small_task heap_one = where_large{&at};
  heap_one();
  EXPECT_NE(at, nullptr);
  EXPECT_FALSE(inside(at, heap_one));
}

TEST(small_function, a_void_one_drops_the_result_and_a_null_pointer_makes_it_empty) {
  int calls = 0;
  small_task drops = [&calls] { return ++calls; };  // an int, dropped
  drops();
  EXPECT_EQ(calls, 1);
  void (*none)() = nullptr;
  small_task empty = none;
  EXPECT_FALSE(empty);
}

}  // namespace
}  // namespace parley
