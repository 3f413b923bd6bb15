// End-to-end encrypted messaging on top of the client connection: what the CLI (and any app)
// uses instead of sending payloads itself. Every message is a Signal-protocol message made by
// e2ee::signal_engine; the server only ever sees ciphertext, padded to 160-byte steps. What is
// encrypted is always a serialized parley.content.v1.Content (proto/parley/content/v1), padded:
// a text, or (1:1 only) this device's sender key for a group.
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
// Groups (sender keys, as Signal and WhatsApp do them):
//  - send_group() encrypts a text once with this device's sender key for the group and sends
//    it to the group's chat (SENDER_KEY_MESSAGE). Before that, each current member who does not
//    hold the current key gets it (Content{sender_key}) in the 1:1 chat, over the pairwise
//    session (set up from a fetched bundle as seal() does). So a member added later gets the
//    key at its current step: it reads what is sent from then on, never what came before.
//    Up to key_messages_in_flight members are given the key at once (their FetchKeys and
//    SendMessage round trips overlap), so a first message to 1,023 members is not 2,046
//    round trips one after another.
//  - Rotation: a key that a member no longer in the group holds (removed, left, or removed
//    and added again) is dropped: the next send_group makes a new one and gives it to the
//    current members only. Decided when the REMOVE / LEAVE event is opened, when this device
//    makes the change (update_group), and again from the member list at every send_group.
//    When this account itself is removed or leaves, every sender key of the group is
//    forgotten: its own at once, the other members' when settle_left_groups() finds the
//    account still out (at the end of the drain, say: an ADD may bring it back in it).
//  - open() decrypts a group message with the sender's key; one whose key has not arrived yet
//    (the 1:1 chat that carries it may drain after the group's) is kept as ciphertext (kind
//    pending, acked: it is on this device) and decrypted into the history when the key comes;
//    take_released() then returns it. System messages (GroupEvent) are recorded in the
//    history with a one-line description (kind event).
//
// Single-threaded, like the client it uses.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "client/client.hpp"
#include "client/local_store.hpp"
#include "e2ee/signal_engine.hpp"
#include "parley/content/v1/content.pb.h"

namespace parley::client {

struct sealed_message {
  std::string peer;
  std::int32_t device = 0;
  std::uint32_t registration_id = 0;
  parley::v2::CipherType type = parley::v2::CIPHER_TYPE_UNSPECIFIED;
  std::string payload;  // the Signal message, as the library serialized it
  std::string text;     // what the history records once it is sent
  // The serialized Content that was padded and encrypted: kept to seal again if the peer's
  // keys turn out stale.
  std::string content;
  // A message that shows nothing (a sender key): not recorded in the history.
  bool control = false;
  // A file message: the blob it references (SendMessage.media_id) and its Media, serialized,
  // recorded with the message once it is sent (what `parley download` reads).
  std::string media_id;
  std::string media;
};

struct opened_message {
  // text: show it. undecryptable: recorded; say so (never show bytes). duplicate: already in
  // the history. not_stored: the local store failed; do not ack, the server pushes it again.
  // event: a group's system message, recorded; `text` describes it. sender_key: a member's
  // sender key for a group, kept; nothing to show (messages it released: take_released()).
  // pending: a group message whose sender key has not arrived yet, kept until it does.
  // Everything but not_stored is on this device: ack it.
  enum class kind { text, undecryptable, duplicate, not_stored, event, sender_key, pending };
  kind what = kind::text;
  std::string text;
  std::string problem;  // for undecryptable: why; for pending: what it waits for
};

// The result of send_group.
struct group_sent {
  parley::v2::SendResult result;
  // Members this device could not give its sender key to (they have never published keys:
  // NO_KEYS): they cannot read this message. Tried again at the next send_group.
  std::vector<std::string> not_reached;
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

// The history's record of the pushed Envelope `e`, as this device received it (and as the CLI
// shows a group event it has just opened).
local_message incoming_record(const parley::v2::Envelope& e, std::string text,
                              std::string problem = {}, message_kind kind = message_kind::text);

class messenger {
 public:
  // Key-stock policy, as Signal: 100 one-time prekeys per upload, topped up below 20; the
  // signed prekey rotated after 7 days, old ones kept 30 days for messages in flight.
  static constexpr std::size_t prekeys_per_upload = 100;
  static constexpr std::size_t prekeys_low_watermark = 20;
  static constexpr std::uint64_t signed_prekey_max_age_ms = 7ull * 24 * 3600 * 1000;
  static constexpr std::uint64_t signed_prekey_keep_ms = 30ull * 24 * 3600 * 1000;
  // Members a group send gives its sender key to at once (each one a FetchKeys where there is
  // no session yet, then a SendMessage): enough to fill the server's group commits, well under
  // its 256 requests in flight per connection.
  static constexpr std::size_t key_messages_in_flight = 32;

  // `me`: this account's username; `device_id`: this device's id (as Register gave it), under
  // which its own sender keys are kept.
  messenger(client& api, local_store& store, e2ee::library_context& library, std::string me,
            std::uint64_t device_id = 1);

  e2ee::signal_engine& engine() { return engine_; }
  local_store& store() { return store_; }
  // Told what went wrong but did not fail the call: a message the server stored whose local
  // record could not be written (the send succeeds; a retry would send it twice).
  void on_warning(std::function<void(const std::string&)> fn) { warn_ = std::move(fn); }

  boost::asio::awaitable<result<void>> publish_keys(parley::v2::Authenticated auth);
  // A PreKeysLow push: upload enough new one-time prekeys to hold prekeys_per_upload again.
  boost::asio::awaitable<result<void>> top_up(std::uint32_t remaining);

  boost::asio::awaitable<result<sealed_message>> seal(std::string peer, std::string text);
  boost::asio::awaitable<result<parley::v2::SendResult>> send(sealed_message m,
                                                              std::string client_msg_id);
  opened_message open(const parley::v2::Envelope& e);

  // A Receipt: raises `r.user()`'s watermark in r.chat_id() in the local store (a maximum);
  // in a group (user empty) the watermark of all the other members, from which the status of
  // this account's group messages derives. True if it moved, false if it was known already
  // (the Receipts after an Authenticate carry current watermarks, some of which this device
  // may have).
  result<bool> apply_receipt(const parley::v2::Receipt& r);

  // Groups: the server's requests, with what they change on this device (the group's name and
  // membership; after a REMOVE or LEAVE, the sender keys as described at the top).
  // client_request_id as for client::create_group.
  boost::asio::awaitable<result<parley::v2::GroupInfo>> create_group(
      std::string name, std::vector<std::string> members, std::string client_request_id = {});
  // `user` for ADD, REMOVE, PROMOTE, DEMOTE; `name` for RENAME; neither for LEAVE.
  boost::asio::awaitable<result<parley::v2::GroupInfo>> update_group(
      std::uint64_t chat_id, parley::v2::GroupChange change, std::string user,
      std::string name = {});
  // NOT_FOUND for a group this device knows: this account is no longer a member (recorded,
  // and the group's sender keys forgotten, as its REMOVE event would).
  boost::asio::awaitable<result<parley::v2::GroupInfo>> get_group(std::uint64_t chat_id);
  // Sends `text` to the group (see the top). `client_msg_id` as for send(): a retry with the
  // same id sends the same ciphertext, unless the sender key that made it was retired since
  // (then it is sealed again with the new key). The message is recorded in the history, from
  // this account.
  boost::asio::awaitable<result<group_sent>> send_group(std::uint64_t chat_id, std::string text,
                                                        std::string client_msg_id);
  // Files (client/media_files uploads them first): a Content{media} sealed for `peer` (then
  // send() it) or sent to a group, as send_group does for a text. `m` must be complete (its
  // media_id from an UploadSlot, key, hash, sizes).
  boost::asio::awaitable<result<sealed_message>> seal_media(std::string peer,
                                                            parley::content::v1::Media m);
  boost::asio::awaitable<result<group_sent>> send_group_media(std::uint64_t chat_id,
                                                              parley::content::v1::Media m,
                                                              std::string client_msg_id);

  // Group messages decrypted since the last call because their sender key arrived (in the
  // history already, as readable or undecryptable messages), in the order they were released.
  std::vector<local_message> take_released();

  // The one-line description of a group's system message ("alice added bob").
  static std::string describe_event(const parley::v2::Envelope& e);

  // Identity changes of contacts not yet shown to the user (each returned once).
  std::vector<e2ee::identity_change> take_identity_changes();

  // A session with `peer`, made now (their keys fetched) if there is none: what seal() needs,
  // checked before work that should not be wasted (a file's upload). Fails as seal() would for
  // an unknown user, one without keys, or this account itself.
  boost::asio::awaitable<result<void>> prepare_session(std::string peer);

  // Deletes the copies of the other members' sender keys of every group this account counts
  // itself out of. Until then they are kept, because a drain goes chat by chat: the 1:1 chat
  // that carries a member's new key can drain before the group's ADD that takes this account
  // back (and the REMOVE before it). So call it when no such ADD can still be on its way
  // ahead of what was opened: at every QueueEmpty, and once the drain is over after each
  // group event or sender key opened (live pushes come in commit order, the ADD before the
  // key sent after it). Fails only if the local store does.
  result<void> settle_left_groups();

  // The safety number with `peer`, fetching their keys first if none are known yet.
  boost::asio::awaitable<result<std::string>> safety_number(std::string peer);

 private:
  // Fetches the peer's bundle and builds a new session; returns the peer's device.
  boost::asio::awaitable<result<std::int32_t>> establish(std::string peer);
  result<sealed_message> seal_with_session(const std::string& peer, std::int32_t device,
                                           const std::string& content, const std::string& text,
                                           bool control);
  boost::asio::awaitable<result<sealed_message>> seal_content(std::string peer,
                                                              std::string content,
                                                              std::string text, bool control);
  opened_message open_pairwise(const parley::v2::Envelope& e);
  opened_message open_group(const parley::v2::Envelope& e);
  opened_message open_event(const parley::v2::Envelope& e);
  // Records e in the history as undecryptable for `problem` (with `group`, its chat as a
  // group's), in a transaction of its own; what open() returns then. Throws if the store fails.
  opened_message record_undecryptable(const parley::v2::Envelope& e, std::string problem,
                                      bool group);
  // Records e in the history with its `text` and commits the caller's `tx`; what open()
  // returns then. Throws if the store fails.
  opened_message record_text(local_store::transaction& tx, const parley::v2::Envelope& e,
                             const std::string& text);
  // Keeps a member's sender key (from a 1:1 message) and decrypts the group messages that
  // waited for it, into `released`. Empty, or why the key was refused. Inside the caller's
  // transaction; throws if the store fails.
  std::string take_sender_key(const std::string& from, std::int32_t device,
                              const parley::content::v1::SenderKeyDistribution& key,
                              std::vector<local_message>& released);
  // What a group's system message changes on this device (its name, membership, sender keys).
  // Inside the caller's transaction.
  void apply_event(const parley::v2::Envelope& e);
  e2ee::group_sender own_key_of(std::uint64_t chat_id) const;
  // Drops this device's sender key of the group if `user` has (or may have) it.
  void rotate_if_held(std::uint64_t chat_id, const std::string& user);
  // This account is no longer a member (it left, or the server says so outside a drain):
  // forgets every sender key of the group at once.
  void forget_group_locally(std::uint64_t chat_id);
  // Runs `change` in one local-store transaction, committed if it returns; what it throws
  // (the store failed) as a client_error, with nothing of it kept.
  result<void> in_transaction(const std::function<void()>& change);
  result<void> remember_group(const parley::v2::GroupInfo& info);
  result<void> after_update(std::uint64_t chat_id, parley::v2::GroupChange change,
                            const std::string& user, const parley::v2::GroupInfo& info);
  result<void> after_not_found(std::uint64_t chat_id);
  struct group_send_plan;
  result<group_send_plan> plan_group_send(const parley::v2::GroupInfo& info);
  result<void> mark_holder(std::uint64_t chat_id, const std::string& member,
                           const key_holder& holder);
  boost::asio::awaitable<result<void>> give_sender_key(std::uint64_t chat_id,
                                                       parley::v2::GroupMember member,
                                                       e2ee::sender_key_distribution key,
                                                       std::string client_msg_id);
  // give_sender_key to each of `members`, key_messages_in_flight at once. Those who never
  // published keys (NO_KEYS) are returned, in the order of `members`; any other failure stops
  // it (the members not started yet are not tried; those in flight finish) and is returned.
  struct key_round;
  boost::asio::awaitable<result<std::vector<std::string>>> give_sender_keys(
      std::uint64_t chat_id, std::vector<parley::v2::GroupMember> members,
      e2ee::sender_key_distribution key, std::string client_msg_id);
  boost::asio::awaitable<void> key_worker(std::shared_ptr<key_round> round);
  // Sends a serialized Content to the group (send_group and send_group_media); `shown` is what
  // the history records, `media` the serialized Media of a file message.
  boost::asio::awaitable<result<group_sent>> send_group_content(std::uint64_t chat_id,
                                                                std::string content,
                                                                std::string shown,
                                                                std::string client_msg_id,
                                                                std::string media_id,
                                                                std::string media);
  // What open() records for a file message (its Media kept for download).
  opened_message record_media(local_store::transaction& tx, const parley::v2::Envelope& e,
                              const parley::content::v1::Media& m);
  result<std::string> seal_group(std::uint64_t chat_id, const std::string& content,
                                 const std::string& client_msg_id);
  result<void> record_group_sent(std::uint64_t chat_id, const std::string& text,
                                 const std::string& media,
                                 const parley::v2::SendResult& r);
  boost::asio::awaitable<result<void>> upload(e2ee::key_upload keys);
  result<std::optional<e2ee::key_upload>> keys_to_publish(const parley::v2::Authenticated& auth);
  result<e2ee::key_upload> new_prekeys(std::uint32_t remaining);
  result<std::int32_t> start_session(const std::string& peer,
                                     const parley::v2::KeyBundles& bundles);
  std::optional<std::int32_t> session_device(const std::string& peer);
  result<void> record_sent(const sealed_message& m, const parley::v2::SendResult& r);
  // A send the server stored whose local record failed (`e`): told to on_warning's function,
  // never failed (a retry would send it twice).
  void warn_unrecorded(const parley::v2::SendResult& r, const client_error& e) const;
  bool knows_identity(const std::string& peer);

  client& api_;
  std::function<void(const std::string&)> warn_;  // on_warning
  local_store& store_;
  e2ee::signal_engine engine_;
  std::string me_;
  std::int32_t device_;
  // client_msg_id -> the message as re-encrypted after STALE_KEYS, until it is sent.
  std::map<std::string, sealed_message> resealed_;
  // client_msg_id -> a group message's SenderKeyMessage and the id of the sender key that made
  // it, until it is sent: a retry sends the same bytes while that key is current, and seals
  // again once it was retired (a removal since: the removed member holds the old key).
  struct group_sealed {
    std::uint32_t key_id = 0;
    std::string bytes;
  };
  std::map<std::string, group_sealed> group_sealed_;
  std::vector<local_message> released_;
};

}  // namespace parley::client
