// What the Signal protocol needs to keep on the device: this device's identity and prekeys
// (private keys included), the sessions with other devices, the identity keys of other users
// as first seen, and the sender keys of groups (this device's own and those other members
// distributed to it). Records are opaque bytes in libsignal's own serialization.
//
// Implementation: client/local_store (SQLite, in the profile, 0600). Methods throw
// std::runtime_error when the storage itself fails; signal_engine turns that into an error of
// the operation that needed it, and nothing of that operation is kept (callers wrap each
// operation in a transaction of the implementation).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace parley::e2ee {

struct identity_change {
  std::string peer;
  std::string old_key;  // serialized public identity keys
  std::string new_key;
  std::uint64_t at_ms = 0;
};

class key_store {
 public:
  virtual ~key_store() = default;

  // Small named values: this device's identity key pair, registration id, id counters.
  virtual std::optional<std::string> meta(std::string_view key) = 0;
  virtual void set_meta(std::string_view key, std::string_view value) = 0;

  virtual std::optional<std::string> prekey(std::uint32_t id) = 0;
  virtual void put_prekey(std::uint32_t id, std::string_view record) = 0;
  virtual void remove_prekey(std::uint32_t id) = 0;
  virtual void remove_all_prekeys() = 0;

  virtual std::optional<std::string> signed_prekey(std::uint32_t id) = 0;
  virtual void put_signed_prekey(std::uint32_t id, std::string_view record,
                                 std::uint64_t created_ms) = 0;
  virtual void remove_signed_prekey(std::uint32_t id) = 0;
  // (id, created_ms), oldest first.
  virtual std::vector<std::pair<std::uint32_t, std::uint64_t>> signed_prekeys() = 0;

  virtual std::optional<std::string> session(std::string_view peer, std::int32_t device) = 0;
  virtual void put_session(std::string_view peer, std::int32_t device, std::string_view record) = 0;
  virtual void remove_session(std::string_view peer, std::int32_t device) = 0;
  virtual std::size_t remove_sessions(std::string_view peer) = 0;
  virtual std::vector<std::int32_t> session_devices(std::string_view peer) = 0;

  // The identity key trusted for a user. Replacing a different key records an identity_change.
  virtual std::optional<std::string> identity(std::string_view peer) = 0;
  virtual void put_identity(std::string_view peer, std::string_view key, std::uint64_t now_ms) = 0;
  // Changes not yet shown to the user; marked shown by the call.
  virtual std::vector<identity_change> take_unseen_identity_changes() = 0;

  // Sender keys (libsignal's SenderKeyRecord): one per group, sender and device. parley names
  // a group by its chat_id in decimal. This device's own key for a group is the record under
  // its own username and device.
  virtual std::optional<std::string> sender_key(std::string_view group, std::string_view sender,
                                                std::int32_t device) = 0;
  virtual void put_sender_key(std::string_view group, std::string_view sender,
                              std::int32_t device, std::string_view record) = 0;
  virtual void remove_sender_key(std::string_view group, std::string_view sender,
                                 std::int32_t device) = 0;
  // Every sender key of the group, this device's own included; how many there were.
  virtual std::size_t remove_sender_keys(std::string_view group) = 0;
};

}  // namespace parley::e2ee
