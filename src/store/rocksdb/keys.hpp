// Key layout of the embedded store: the chat log (docs/architecture.md, "The chat log"). Every
// integer is big-endian so that RocksDB's byte-wise order is numeric order and prefix scans are
// range scans.
//
//   column family   key                                  value
//   default         "meta/..."                           counters, Snowflake high-water mark
//   default         "group_marks/" | be64 chat_id        a group's last merged watermarks
//   accounts        username                             be64 user_id
//   users           be64 user_id                         UserRecord
//   devices         be64 device_id                       DeviceRecord
//   chats           be64 chat_id                         ChatRecord (kind, members)
//   direct_chats    be64 smaller user | be64 larger      be64 chat_id (the pair's 1:1 chat)
//   user_chats      be64 user_id | be64 chat_id          the user's chats: "" a 1:1 chat, "g" a
//                                                        group, "g" | be64 seq a group the user
//                                                        left or was removed from at that seq
//   messages        be64 chat_id | be64 seq              StoredMessage (the chat log)
//   cursors         be64 chat | be64 user | be64 device  be64 seq: the device has the chat up to it
//   read_marks      be64 chat | be64 user                be64 seq: the user has read up to it
//   dedupe          be64 device_id | client_msg_id       DedupeRecord (expires: dedupe_window)
//   device_keys     be64 device_id                       DeviceKeys (public keys, prekeys)
//   media           "b" | media id (32 hex digits)       MediaRecord
//   media           "c" | be64 created_ms | media id     "": the record has no reference yet
//                                                        (the sweep's index)
//   media           "u" | be64 user_id                   be64: bytes the user's media hold
//
// A chat's head (its last seq) is not stored: it is the last key of its log.
// Keys are built on the stack (stack_key): no heap string per key on the message path.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace parley::store::keys {

// A key of up to 80 bytes (the longest is a dedupe key: 8 + 64), built in place.
class stack_key {
 public:
  stack_key& be64(std::uint64_t v) {
    for (int i = 7; i >= 0; --i) {
      bytes_[size_ + static_cast<std::size_t>(i)] = static_cast<char>(v & 0xff);
      v >>= 8;
    }
    size_ += 8;
    return *this;
  }
  // The caller guarantees the total stays within capacity (client_msg_id is at most 64 bytes).
  stack_key& bytes(std::string_view s) {
    const std::size_t n = std::min(s.size(), bytes_.size() - size_);
    if (n == 0) return *this;  // an empty view may have no data pointer at all (memcpy's UB)
    std::memcpy(bytes_.data() + size_, s.data(), n);
    size_ += n;
    return *this;
  }
  std::string_view view() const { return {bytes_.data(), size_}; }
  operator std::string_view() const { return view(); }  // NOLINT(google-explicit-constructor)
  std::size_t size() const { return size_; }

 private:
  std::array<char, 80> bytes_{};
  std::size_t size_ = 0;
};

inline stack_key be64(std::uint64_t v) { return stack_key().be64(v); }

inline stack_key direct_chat(std::uint64_t a, std::uint64_t b) {
  return stack_key().be64(std::min(a, b)).be64(std::max(a, b));
}
inline stack_key user_chat(std::uint64_t user, std::uint64_t chat) {
  return stack_key().be64(user).be64(chat);
}
inline stack_key message(std::uint64_t chat, std::uint64_t seq) {
  return stack_key().be64(chat).be64(seq);
}
inline stack_key cursor(std::uint64_t chat, std::uint64_t user, std::uint64_t device) {
  return stack_key().be64(chat).be64(user).be64(device);
}
inline stack_key read_mark(std::uint64_t chat, std::uint64_t user) {
  return stack_key().be64(chat).be64(user);
}
inline stack_key dedupe(std::uint64_t device, std::string_view client_msg_id) {
  return stack_key().be64(device).bytes(client_msg_id);
}

inline stack_key media_record(std::string_view media) { return stack_key().bytes("b").bytes(media); }
inline stack_key media_unreferenced(std::uint64_t created_ms, std::string_view media) {
  return stack_key().bytes("c").be64(created_ms).bytes(media);
}
inline stack_key media_usage(std::uint64_t user) { return stack_key().bytes("u").be64(user); }

inline stack_key group_marks(std::uint64_t chat) {
  return stack_key().bytes("group_marks/").be64(chat);
}

inline constexpr std::string_view meta_next_user = "meta/next_user_id";
inline constexpr std::string_view meta_next_device = "meta/next_device_id";
inline constexpr std::string_view meta_snowflake = "meta/snowflake_high_water";

}  // namespace parley::store::keys
