#include "wire/scratch_arena.hpp"

#include <cstddef>

namespace parley::wire {

namespace {

constexpr std::size_t block_bytes = 8 * 1024;

google::protobuf::Arena& thread_arena() {
  alignas(16) thread_local char block[block_bytes];
  thread_local google::protobuf::Arena arena([] {
    google::protobuf::ArenaOptions o;
    o.initial_block = block;
    o.initial_block_size = block_bytes;
    return o;
  }());
  return arena;
}

thread_local int depth = 0;  // scopes open on this thread

}  // namespace

scratch_arena::scratch_arena() : arena_(thread_arena()) { ++depth; }

scratch_arena::~scratch_arena() {
  // Reset keeps the thread's own block and frees any block added past it.
  if (--depth == 0) arena_.Reset();
}

}  // namespace parley::wire
