// Key layout of the embedded store. Every integer is big-endian so that RocksDB's byte-wise
// order is numeric order and prefix scans are range scans.
//
//   column family   key                                  value
//   default         "meta/..."                           counters, Snowflake high-water mark
//   accounts        username                             be64 user_id
//   users           be64 user_id                         UserRecord
//   devices         be64 device_id                       DeviceRecord
//   chats           chat                                 be64 last sequence number
//   messages        chat | be64 ~message_id              StoredMessage (newest first in a scan)
//   message_index   be64 message_id                      chat
//   queue           be64 device_id | be64 event_id       QueueItem
//   dedupe          be64 device_id | client_msg_id       DedupeRecord
//   delivered       be64 message_id                      empty
//   read_marks      chat | be64 reader user_id           be64 up_to message_id
//   device_keys     be64 device_id                       DeviceKeys (public keys, prekeys)
//
// A 1:1 chat is 0x01 | be64 smaller user_id | be64 larger user_id (17 bytes); groups will use
// another first byte.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/big_endian.hpp"

namespace parley::store::keys {

inline std::string be64(std::uint64_t v) {
  std::string s;
  append_be64(s, v);
  return s;
}

inline std::string direct_chat(std::uint64_t a, std::uint64_t b) {
  std::string s(1, '\x01');
  append_be64(s, std::min(a, b));
  append_be64(s, std::max(a, b));
  return s;
}

inline bool is_direct_chat(std::string_view chat) { return chat.size() == 17 && chat[0] == '\x01'; }

// The other participant of a direct chat.
inline std::uint64_t direct_peer(std::string_view chat, std::uint64_t me) {
  const std::uint64_t a = read_be64(chat, 1);
  const std::uint64_t b = read_be64(chat, 9);
  return a == me ? b : a;
}

inline std::string message(std::string_view chat, std::uint64_t id) {
  std::string s(chat);
  append_be64(s, ~id);
  return s;
}

inline std::string queue(std::uint64_t device, std::uint64_t event) {
  std::string s;
  append_be64(s, device);
  append_be64(s, event);
  return s;
}

inline std::string dedupe(std::uint64_t device, std::string_view client_msg_id) {
  std::string s;
  append_be64(s, device);
  s.append(client_msg_id);
  return s;
}

inline std::string read_mark(std::string_view chat, std::uint64_t reader) {
  std::string s(chat);
  append_be64(s, reader);
  return s;
}

inline constexpr std::string_view meta_next_user = "meta/next_user_id";
inline constexpr std::string_view meta_next_device = "meta/next_device_id";
inline constexpr std::string_view meta_snowflake = "meta/snowflake_high_water";

}  // namespace parley::store::keys
