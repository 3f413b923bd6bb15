// Every limit of the wire protocol, in one place (docs/protocol.md lists them).
#pragma once

#include <cstddef>
#include <cstdint>

namespace parley::wire {

struct limits {
  std::size_t max_frame_bytes = 256 * 1024;  // larger WebSocket messages: close code 1009
  // Before authentication (Register and Authenticate are tens of bytes): larger messages, or a
  // frame header announcing one, close the connection with 1009. Keeps an unauthenticated
  // socket from parking more than this much of a partial message on the server.
  std::size_t max_unauthenticated_frame_bytes = 4 * 1024;
  std::size_t max_payload_bytes = 64 * 1024;
  std::size_t max_client_msg_id_bytes = 64;
  std::size_t max_ack_cursors = 1024;
  std::size_t max_presence_usernames = 256;
  std::size_t max_history_limit = 100;
  std::size_t default_history_limit = 50;
  // Payload bytes of one History page (and of one drain read): 100 × 64 KiB would not fit a
  // client's 1 MiB frame limit. A page always holds at least one message.
  std::size_t max_history_bytes = 512 * 1024;
  std::size_t max_username_bytes = 32;
  std::size_t max_prekeys_per_upload = 100;
  std::size_t max_prekeys_held = 500;
  std::size_t prekeys_low_watermark = 20;  // below this after a fetch: PreKeysLow
  std::size_t max_group_members = 1024;    // the creator included
  std::size_t max_group_name_bytes = 64;
  // RequestUpload.size: the ciphertext of the largest file, 100,000,000 bytes sealed in 64 KiB
  // chunks with a 16-byte tag each (1,526 chunks; media::ciphertext_size, checked by a test).
  std::uint64_t max_media_bytes = 100'024'416;
};

}  // namespace parley::wire
