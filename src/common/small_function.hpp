// A move-only callable that holds callables of up to `inline_bytes` in itself and only larger
// ones on the heap. std::function holds 16 bytes inline (libstdc++), so a callable that
// captures a shared_ptr and anything more costs an allocation each time it is made; the
// message path makes several per message (a lane's task: a session and an envelope; a store
// request: its completion, its work, its undo step). small_task is the `void()` one.
//
// Not thread-safe (one owner at a time, as a value). Calling an empty one is undefined. Its
// size is inline_bytes plus a pointer (128 bytes): a queue of them holds 4 times what one of
// std::functions (32 bytes) does, e.g. 8 MiB for the store writer's 65,536 waiting requests.
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace parley {

template <class Signature>
class small_function;

template <class R, class... Args>
class small_function<R(Args...)> {
 public:
  static constexpr std::size_t inline_bytes = 112;

  small_function() noexcept = default;

  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, small_function> &&
                                              std::is_invocable_r_v<R, std::decay_t<F>&, Args...>>>
  small_function(F&& f) {  // NOLINT(google-explicit-constructor): converts, as std::function
    using fn = std::decay_t<F>;
    if constexpr (std::is_pointer_v<fn> || std::is_member_pointer_v<fn>) {
      if (f == nullptr) return;  // empty, as std::function from a null pointer
    }
    if constexpr (fits<fn>()) {
      ::new (static_cast<void*>(storage_)) fn(std::forward<F>(f));
      ops_ = &inline_ops<fn>;
    } else {
      ::new (static_cast<void*>(storage_)) fn*(new fn(std::forward<F>(f)));
      ops_ = &heap_ops<fn>;
    }
  }

  small_function(small_function&& other) noexcept : ops_(other.ops_) {
    if (ops_ != nullptr) ops_->move(other.storage_, storage_);
    other.ops_ = nullptr;
  }

  small_function& operator=(small_function&& other) noexcept {
    if (this != &other) {
      reset();
      ops_ = other.ops_;
      if (ops_ != nullptr) ops_->move(other.storage_, storage_);
      other.ops_ = nullptr;
    }
    return *this;
  }

  small_function(const small_function&) = delete;
  small_function& operator=(const small_function&) = delete;
  ~small_function() { reset(); }

  R operator()(Args... args) { return ops_->call(storage_, std::forward<Args>(args)...); }
  explicit operator bool() const noexcept { return ops_ != nullptr; }

  // Whether callables of type F are held inline (for tests and static checks).
  template <class F>
  static constexpr bool fits() {
    constexpr bool small = sizeof(F) <= inline_bytes;
    constexpr bool aligned = alignof(F) <= alignof(std::max_align_t);
    return small && aligned && std::is_nothrow_move_constructible_v<F>;
  }

 private:
  struct operations {
    R (*call)(void* storage, Args&&... args);
    void (*move)(void* from, void* to) noexcept;  // leaves `from` destroyed
    void (*destroy)(void* storage) noexcept;
  };

  // Calls `f`; a result is dropped when R is void, as std::function does.
  template <class F>
  static R invoke(F& f, Args&&... args) {
    if constexpr (std::is_void_v<R>) {
      f(std::forward<Args>(args)...);
    } else {
      return f(std::forward<Args>(args)...);
    }
  }

  template <class F>
  static constexpr operations inline_ops{
      [](void* s, Args&&... args) -> R {
        return invoke(*std::launder(static_cast<F*>(s)), std::forward<Args>(args)...);
      },
      [](void* from, void* to) noexcept {
        F* f = std::launder(static_cast<F*>(from));
        ::new (to) F(std::move(*f));
        f->~F();
      },
      [](void* s) noexcept { std::launder(static_cast<F*>(s))->~F(); }};

  template <class F>
  static constexpr operations heap_ops{
      [](void* s, Args&&... args) -> R {
        return invoke(**std::launder(static_cast<F**>(s)), std::forward<Args>(args)...);
      },
      [](void* from, void* to) noexcept { ::new (to) F*(*std::launder(static_cast<F**>(from))); },
      [](void* s) noexcept { delete *std::launder(static_cast<F**>(s)); }};

  void reset() noexcept {
    if (ops_ != nullptr) ops_->destroy(storage_);
    ops_ = nullptr;
  }

  alignas(std::max_align_t) unsigned char storage_[inline_bytes];
  const operations* ops_ = nullptr;
};

using small_task = small_function<void()>;

}  // namespace parley
