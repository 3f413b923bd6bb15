// End-to-end encrypted messaging on top of the client connection: what the CLI (and any app)
// uses instead of sending payloads itself. Every message is a Signal-protocol message made by
// e2ee::signal_engine; the server only ever sees ciphertext, padded to 160-byte steps.
//
//  - publish_keys() after Authenticate creates this device's identity on first use (or after a
//    reinstall, when the local store is new) and publishes what the server lacks: the first
//    upload, a top-up below the watermark, a weekly signed-prekey rotation.
//  - seal() encrypts for a user, setting up a session (X3DH) from a fetched bundle first if
//    there is none; send() sends it, and if the server says STALE_KEYS (the peer reinstalled)
//    fetches the new keys, seals again and retries once. Either way a new identity key of the
//    peer is recorded and returned by take_identity_changes(): never silently.
//  - open() decrypts a pushed Envelope and stores it in the local history (with its chat_id
//    and seq) in one transaction, so the caller acks it only once it is safely on this device.
//    A message that cannot be decrypted is recorded and reported as such, never shown as text.
//    ack_batch gathers what to ack: per chat the highest seq stored, as one Ack's cursors.
//  - apply_receipt() keeps the peers' delivered / read watermarks, from which the history
//    derives each sent message's status.
//
// Single-threaded, like the client it uses.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "client/client.hpp"
#include "client/local_store.hpp"
#include "e2ee/signal_engine.hpp"

namespace parley::client {

struct sealed_message {
  std::string peer;
  std::int32_t device = 0;
  std::uint32_t registration_id = 0;
  parley::v2::CipherType type = parley::v2::CIPHER_TYPE_UNSPECIFIED;
  std::string payload;  // the Signal message, as the library serialized it
  std::string text;     // kept to seal again if the peer's keys turn out stale
};

struct opened_message {
  // text: show it. undecryptable: recorded; say so (never show bytes). duplicate: already in
  // the history. not_stored: the local store failed; do not ack, the server pushes it again.
  enum class kind { text, undecryptable, duplicate, not_stored };
  kind what = kind::text;
  std::string text;
  std::string problem;  // for undecryptable: why
};

// The cursors to ack after opening pushed Envelopes: per chat, the highest seq whose message
// is stored on this device. An Ack is cumulative ("this device has the chat up to seq"), so
// once a message of a chat could not be stored (opened_message::kind::not_stored) nothing of
// that chat at or after it is acked by this batch: the server pushes it again after the next
// reconnect. Use one batch per connection (Envelopes of a chat arrive in seq order on it).
class ack_batch {
 public:
  // Records the outcome of open(e). True if e's seq is now to be acked (it is stored, and
  // nothing before it in its chat failed): what the user has seen and may mark read.
  bool add(const parley::v2::Envelope& e, const opened_message& opened);
  // At most `max` cursors to send in one Ack (the protocol's limit is 1,024), removed from
  // the batch.
  std::vector<chat_cursor> take(std::size_t max = 1024);
  bool empty() const { return pending_.empty(); }
  std::size_t size() const { return pending_.size(); }

 private:
  std::map<std::uint64_t, std::uint64_t> pending_;  // chat_id -> highest stored seq
  std::set<std::uint64_t> blocked_;                 // chats with a message not stored
};

// The wire's key messages to and from the engine's: what UploadKeys publishes, and the
// session-starting keys of a PreKeyBundle (nullopt if its device id does not fit libsignal's
// int32 device ids).
parley::v2::UploadKeys to_wire(const e2ee::key_upload& keys);
std::optional<e2ee::peer_bundle> from_wire(const parley::v2::PreKeyBundle& bundle);

class messenger {
 public:
  // Key-stock policy, as Signal: 100 one-time prekeys per upload, topped up below 20; the
  // signed prekey rotated after 7 days, old ones kept 30 days for messages in flight.
  static constexpr std::size_t prekeys_per_upload = 100;
  static constexpr std::size_t prekeys_low_watermark = 20;
  static constexpr std::uint64_t signed_prekey_max_age_ms = 7ull * 24 * 3600 * 1000;
  static constexpr std::uint64_t signed_prekey_keep_ms = 30ull * 24 * 3600 * 1000;

  messenger(client& api, local_store& store, e2ee::library_context& library, std::string me);

  e2ee::signal_engine& engine() { return engine_; }
  local_store& store() { return store_; }

  boost::asio::awaitable<result<void>> publish_keys(parley::v2::Authenticated auth);
  // A PreKeysLow push: upload enough new one-time prekeys to hold prekeys_per_upload again.
  boost::asio::awaitable<result<void>> top_up(std::uint32_t remaining);

  boost::asio::awaitable<result<sealed_message>> seal(std::string peer, std::string text);
  boost::asio::awaitable<result<parley::v2::SendResult>> send(sealed_message m,
                                                              std::string client_msg_id);
  opened_message open(const parley::v2::Envelope& e);

  // A Receipt: raises `r.user()`'s watermark in r.chat_id() in the local store (a maximum).
  // True if it moved, false if it was known already (the Receipts after an Authenticate carry
  // current watermarks, some of which this device may have).
  result<bool> apply_receipt(const parley::v2::Receipt& r);

  // Identity changes of contacts not yet shown to the user (each returned once).
  std::vector<e2ee::identity_change> take_identity_changes();

  // The safety number with `peer`, fetching their keys first if none are known yet.
  boost::asio::awaitable<result<std::string>> safety_number(std::string peer);

 private:
  // Fetches the peer's bundle and builds a new session; returns the peer's device.
  boost::asio::awaitable<result<std::int32_t>> establish(std::string peer);
  result<sealed_message> seal_with_session(const std::string& peer, std::int32_t device,
                                           const std::string& text);
  boost::asio::awaitable<result<void>> upload(e2ee::key_upload keys);
  result<std::optional<e2ee::key_upload>> keys_to_publish(const parley::v2::Authenticated& auth);
  result<e2ee::key_upload> new_prekeys(std::uint32_t remaining);
  result<std::int32_t> start_session(const std::string& peer,
                                     const parley::v2::KeyBundles& bundles);
  std::optional<std::int32_t> session_device(const std::string& peer);
  result<void> record_sent(const sealed_message& m, const parley::v2::SendResult& r);
  bool knows_identity(const std::string& peer);

  client& api_;
  local_store& store_;
  e2ee::signal_engine engine_;
  std::string me_;
  // client_msg_id -> the message as re-encrypted after STALE_KEYS, until it is sent.
  std::map<std::string, sealed_message> resealed_;
};

}  // namespace parley::client
