// A per-thread protobuf arena for messages that live within one call: a request while it is
// handled, a frame while it is built and encoded. Its first 8 KiB are a block of the thread's
// own, so such a message, its sub-messages and its string objects cost no heap allocation
// (string contents over 15 bytes still do). Used on the message path, where each frame in and
// out used to cost a few allocations of this kind.
//
// Contract: a scratch_arena is a scope. Messages made in it live until the outermost scope on
// the thread ends, which resets the arena; scopes may nest (the inner ones reset nothing). A
// scope must not be held across a suspension (co_await) or handed to another thread, and
// nothing made in it may be kept: copy or move what outlives it into a message of its own
// (moving from an arena message into a heap one copies).
#pragma once

#include <google/protobuf/arena.h>

namespace parley::wire {

class scratch_arena {
 public:
  scratch_arena();
  ~scratch_arena();
  scratch_arena(const scratch_arena&) = delete;
  scratch_arena& operator=(const scratch_arena&) = delete;

  // A new, empty message of type M in the arena.
  template <class M>
  M& make() {
    return *google::protobuf::Arena::CreateMessage<M>(&arena_);
  }

 private:
  google::protobuf::Arena& arena_;
};

}  // namespace parley::wire
