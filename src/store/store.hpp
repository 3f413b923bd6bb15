// The Store interface: accounts, devices, messages, device queues and receipts.
//
// Implementations: store/rocksdb/rocksdb_store (embedded, the default). A PostgreSQL-protocol
// implementation follows for the cluster mode; tests/store_contract_test.cpp runs against each.
//
// Contract shared by every method:
//  - Methods never block the caller: each queues its work and returns.
//  - The completion runs exactly once, on a thread of the store's own (never the caller's), and
//    must not block: post anything heavy to another executor.
//  - Writes (register_account, send, ack, mark_read, upload_keys, take_key_bundles) are durable
//  (fsync'd) before their
//    completion runs, and their completions run in commit order. Effects of one write are
//    visible to every read issued after its completion ran.
//  - Expected failures (unknown user, duplicate username, ...) are values of store::errc.
//  - A store that cannot write (disk full, a failed write it has not recovered from) refuses
//    every write with errc::unavailable, applying nothing, and keeps serving reads; it
//    resumes writing by itself once the cause is gone. health() says which state it is in.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "store/store_error.hpp"

namespace parley::store {

using user_id = std::uint64_t;
using device_id = std::uint64_t;
using message_id = std::uint64_t;
// Position in a device queue. A message's event id is its message id; a receipt gets its own.
// Both come from one Snowflake sequence, so a device queue is ordered by time.
using event_id = std::uint64_t;
using sha256_digest = std::array<std::uint8_t, 32>;

// Values match parley.v1.MessageStatus.
enum class message_status : std::uint8_t { sent = 1, delivered = 2, read = 3 };

struct account {
  user_id user = 0;
  std::string username;
  std::vector<device_id> devices;
};

struct device_key_state {
  bool has_keys = false;
  std::uint32_t one_time_prekeys = 0;
  std::uint32_t registration_id = 0;
};

struct device {
  device_id id = 0;
  user_id user = 0;
  std::string username;
  sha256_digest token_hash{};
  device_key_state keys;
  bool hide_last_seen = false;  // the account's privacy setting
};

struct registration_request {
  std::string username;  // already validated by the caller
  sha256_digest token_hash{};
};

struct registration {
  user_id user = 0;
  device_id device = 0;
};

struct send_request {
  user_id sender = 0;
  device_id sender_device = 0;
  std::string sender_name;
  std::string recipient_name;
  std::string client_msg_id;
  std::string payload;
  std::uint32_t cipher_type = 0;  // parley.v1.CipherType, stored and passed on as is
  // Must equal the registration id of every recipient device that has keys (else
  // errc::stale_keys); devices without keys accept anything.
  std::uint32_t recipient_registration_id = 0;
};

struct message_event {
  event_id event = 0;  // == id
  message_id id = 0;
  std::uint64_t seq = 0;
  std::string from;
  device_id from_device = 0;
  std::uint64_t sent_at_ms = 0;
  std::string payload;
  std::uint32_t cipher_type = 0;
};

struct receipt_event {
  event_id event = 0;
  message_id id = 0;  // delivered: that message; read: every message up to it
  std::string peer;   // who delivered or read
  message_status status = message_status::delivered;
  std::uint64_t at_ms = 0;
};

using device_event = std::variant<message_event, receipt_event>;

// An event committed to a device's queue, to be pushed at once if the device is online.
struct delivery {
  device_id device = 0;
  device_event event;
};

struct send_outcome {
  message_id id = 0;
  std::uint64_t seq = 0;
  std::uint64_t sent_at_ms = 0;
  bool duplicate = false;            // client_msg_id seen before: the first result, no delivery
  std::vector<delivery> deliveries;  // the recipient's devices
};

struct history_entry {
  message_id id = 0;
  std::uint64_t seq = 0;
  std::string from;
  std::uint64_t sent_at_ms = 0;
  std::string payload;
  std::uint32_t cipher_type = 0;
  device_id from_device = 0;
};

// The prekey service. Keys arrive already checked by the caller (lengths, types, the signed
// prekey's signature); the store enforces what needs the stored state.
struct prekey {
  std::uint32_t id = 0;
  std::string public_key;
  std::string signature;  // signed prekeys only
};

struct key_upload {
  device_id device = 0;
  std::string identity_key;
  std::uint32_t registration_id = 0;
  std::optional<prekey> signed_prekey;
  std::vector<prekey> one_time_prekeys;
};

struct key_stock {
  std::uint32_t one_time_prekeys = 0;
  bool identity_replaced = false;
};

struct key_bundle {
  device_id device = 0;
  std::uint32_t registration_id = 0;
  std::string identity_key;
  prekey signed_prekey;
  std::optional<prekey> one_time_prekey;  // nullopt when the device had none left
  std::uint32_t remaining = 0;            // one-time prekeys the device has left after this
};

// Whether the store accepts writes now, and if not, why (for /healthz and the logs).
struct store_health {
  bool writable = true;
  std::string reason;  // empty while writable
};

template <class T>
using completion = std::function<void(result<T>)>;

class store {
 public:
  virtual ~store() = default;

  // Creates the account and its first device. errc::username_taken if the name exists.
  virtual void register_account(registration_request request, completion<registration> done) = 0;

  // errc::not_found if there is no such device.
  virtual void find_device(device_id id, completion<device> done) = 0;

  // errc::not_found if there is no such user.
  virtual void find_account(std::string username, completion<account> done) = 0;

  // Stores a 1:1 message once per (sender_device, client_msg_id) and queues it for every
  // device of the recipient. errc::unknown_user if the recipient does not exist,
  // errc::self_message if it is the sender.
  virtual void send(send_request request, completion<send_outcome> done) = 0;

  // Removes acked events from the device's queue. Each acked message becomes delivered and
  // queues a delivered receipt for the sender's devices (returned as deliveries). Unknown
  // event ids are ignored, so a repeated ack is harmless.
  virtual void ack(device_id device, std::string device_username, std::vector<event_id> events,
                   completion<std::vector<delivery>> done) = 0;

  // Marks every message from `peer` to `reader` up to `up_to` as read and queues one read
  // receipt for the peer's devices. errc::unknown_user, errc::not_found if `up_to` is not a
  // message of that chat. A mark at or below the current one changes nothing.
  virtual void mark_read(user_id reader, std::string reader_name, std::string peer,
                         message_id up_to, completion<std::vector<delivery>> done) = 0;

  // Up to `limit` queued events of the device with event id > after, oldest first.
  virtual void read_queue(device_id device, event_id after, std::size_t limit,
                          completion<std::vector<device_event>> done) = 0;

  // Status of a message sent by `requester`; errc::not_found for any other message.
  virtual void status(user_id requester, message_id id, completion<message_status> done) = 0;

  // Messages of the 1:1 chat between requester and peer with id < before (0: no bound),
  // newest first.
  virtual void history(user_id requester, std::string peer, message_id before, std::size_t limit,
                       completion<std::vector<history_entry>> done) = 0;

  // Stores a device's public keys (see parley.v1.UploadKeys for the rules). Fails with
  // errc::missing_signed_prekey if the first upload or a new identity comes without a signed
  // prekey, errc::too_many_prekeys if the device would hold more than `max_held` one-time
  // prekeys; nothing is stored then. One-time prekeys with an id already held replace it.
  virtual void upload_keys(key_upload upload, std::size_t max_held, completion<key_stock> done) = 0;

  // One bundle per device of the user that has keys, each taking (removing) the device's
  // oldest one-time prekey. errc::unknown_user, or errc::no_keys if no device has keys.
  virtual void take_key_bundles(std::string username, completion<std::vector<key_bundle>> done) = 0;

  // For each of `usernames`, whether it and `requester` share a chat (a 1:1 chat holding at
  // least one message). Unknown users are false. Presence and typing pass only between users
  // who do.
  virtual void shared_chats(user_id requester, std::vector<std::string> usernames,
                            completion<std::vector<bool>> done) = 0;

  // Stores the user's privacy setting (a write).
  virtual void set_privacy(user_id user, bool hide_last_seen, completion<void> done) = 0;

  // The store's state as of its last write or check. Thread-safe; never blocks on I/O.
  virtual store_health health() = 0;

  // An estimate of the events waiting in all device queues (for metrics).
  virtual std::uint64_t queued_events_estimate() = 0;

  // Finishes queued work, then refuses new work with errc::shutting_down. Idempotent.
  virtual void stop() = 0;
};

}  // namespace parley::store
