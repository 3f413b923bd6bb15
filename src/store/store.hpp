// The Store interface: accounts, devices, keys, and the chat log with its cursors.
//
// The model (docs/architecture.md, "The chat log"): every conversation is a chat with a
// chat_id; a message is appended once to its chat's log at (chat_id, seq). Each device has a
// delivery cursor per chat ("has everything up to seq N"); each member a read mark. Delivered
// and read are watermarks over those, never records per message.
//
// Implementations: store/rocksdb/rocksdb_store (embedded, the default). A PostgreSQL-protocol
// implementation follows for the cluster mode; store_contract_test.cpp runs against each.
//
// Contract shared by every method:
//  - Methods never block the caller: each queues its work and returns.
//  - The completion runs exactly once, on a thread of the store's own (never the caller's), and
//    must not block: post anything heavy to another executor.
//  - Writes (register_account, send, ack, mark_read, upload_keys, take_key_bundles,
//    set_privacy) are durable (fsync'd) before their completion runs, and their completions
//    run in commit order. Effects of one write are visible to every read issued after its
//    completion ran.
//  - Every write is all or nothing: a request that fails applied nothing.
//  - Expected failures (unknown user, duplicate username, ...) are values of store::errc.
//  - A store that cannot write (disk full, a failed write it has not recovered from) refuses
//    every write with errc::unavailable, applying nothing, and keeps serving reads; it
//    resumes writing by itself once the cause is gone. health() says which state it is in.
//    One whose writer has too much waiting refuses new writes with errc::busy.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "store/store_error.hpp"

namespace parley::store {

using user_id = std::uint64_t;
using device_id = std::uint64_t;
using message_id = std::uint64_t;
using chat_id = std::uint64_t;
using sha256_digest = std::array<std::uint8_t, 32>;

// Values match parley.v2.MessageStatus.
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

// parley.v2.GroupChange.
enum class group_change : std::uint8_t {
  create = 1, add = 2, remove = 3, promote = 4, demote = 5, rename = 6, leave = 7
};

// A group's system message (parley.v2.GroupEvent).
struct group_event {
  group_change change = group_change::create;
  std::string user;                  // whom it is about (add .. leave)
  std::string name;                  // create, rename
  std::vector<std::string> members;  // create
};

// One entry of a chat log, as stored once and shared (read-only) by every push of it.
struct chat_message {
  chat_id chat = 0;
  std::uint64_t seq = 0;
  message_id id = 0;
  user_id sender = 0;
  device_id sender_device = 0;
  std::string sender_name;
  std::uint64_t sent_at_ms = 0;
  std::string payload;
  std::uint32_t cipher_type = 0;  // parley.v2.CipherType, stored and passed on as is
  // Set on a group's system message (payload empty, cipher_type 0; sender 0 for the server).
  std::shared_ptr<const group_event> event;
  // The blob this message references (send_request::media), or empty.
  std::string media;
};
using shared_message = std::shared_ptr<const chat_message>;

// A chat named by its id, or (1:1 only) by the other member's username.
struct chat_ref {
  chat_id chat = 0;  // if non-zero, this
  std::string peer;  // else the 1:1 chat with this user
};

struct send_request {
  user_id sender = 0;
  device_id sender_device = 0;
  std::string sender_name;
  // A group or a 1:1 chat by id, or the 1:1 chat by the peer's username (created by its first
  // message). A group takes cipher_type 4 (SENDER_KEY_MESSAGE) only, a 1:1 chat anything else.
  chat_ref to;
  std::string client_msg_id;
  std::string payload;
  std::uint32_t cipher_type = 0;
  // Must equal the registration id of every recipient device that has keys (else
  // errc::stale_keys); devices without keys accept anything.
  std::uint32_t recipient_registration_id = 0;
  // A media id (media::valid_blob_id, checked by the caller) of a record this sender created
  // with create_media, or empty. errc::media_not_found otherwise. The record counts one more
  // reference (the sweep keeps it) and the entry names it (media_of).
  std::string media;
};

struct send_outcome {
  chat_id chat = 0;
  std::uint64_t seq = 0;
  message_id id = 0;
  std::uint64_t sent_at_ms = 0;
  bool duplicate = false;  // client_msg_id seen before: the first result, nothing appended
  shared_message message;  // the appended entry (null for a duplicate)
  // The devices to push it to: every device of the other members, and the sender's own
  // other devices.
  std::vector<device_id> recipients;
};

// "This device has chat `chat` up to `seq`" (an Ack entry).
struct cursor_update {
  chat_id chat = 0;
  std::uint64_t seq = 0;
};

// A member's watermark in a chat: `user` has it delivered or read up to `up_to`.
struct watermark {
  chat_id chat = 0;
  std::string user;
  message_status status = message_status::delivered;
  std::uint64_t up_to = 0;
  std::uint64_t at_ms = 0;
  // The receipts stamp of the commit that moved it (parley.v2.Receipts.stamp): set on what
  // ack and mark_read return, 0 in a backlog.
  std::uint64_t stamp = 0;
};

// A watermark that moved, for one device to be told (a Receipt push). In a group, mark.user
// is empty: the lowest watermark of every other current member (see group_receipts).
struct receipt_delivery {
  device_id device = 0;
  watermark mark;
};

// What ack() and mark_read() moved: receipts for 1:1 chats, to push now; the groups in which
// the user's watermark moved, whose receipts are merged (store::group_receipts, at most once
// per group per interval) instead of one push per member per ack.
struct watermark_moves {
  std::vector<receipt_delivery> receipts;
  std::vector<chat_id> groups;
};

// A group as its members see it (parley.v2.GroupInfo).
struct group_member {
  user_id user = 0;
  std::string username;
  bool admin = false;
  std::uint64_t joined_seq = 0;
};
struct group_info {
  chat_id chat = 0;
  std::string name;
  std::vector<group_member> members;  // in order of joining
};

// A system message a group change appended, and the devices to push it to.
struct group_push {
  shared_message message;
  std::vector<device_id> recipients;
};

struct create_group_request {
  user_id creator = 0;
  device_id creator_device = 0;
  std::string creator_name;
  std::string name;                  // already validated by the caller (1-64 bytes)
  std::vector<std::string> members;  // usernames; the creator may be among them
  std::size_t max_members = 1024;
  // Idempotency key (1-64 bytes, validated), in the creator device's dedupe namespace, the one
  // of send_request::client_msg_id.
  std::string client_request_id;
};

struct group_change_request {
  user_id actor = 0;
  device_id actor_device = 0;
  std::string actor_name;
  chat_id chat = 0;
  group_change change = group_change::add;  // add .. leave
  std::string user;                         // add, remove, promote, demote
  std::string name;                         // rename: already validated
  std::size_t max_members = 1024;
};

// The outcome of a group's creation or change: the group after it, and what it appended
// (nothing for a change that changed nothing: promoting an admin, demoting a non-admin).
struct group_outcome {
  group_info info;
  std::vector<group_push> pushes;  // in seq order
  // create_group retried within the dedupe window: the group as it is now, nothing appended
  // (no pushes), and created_seq the seq of its creation event.
  bool duplicate = false;
  std::uint64_t created_seq = 0;
};

// GetStatus: the status and the counts over the other current members who were members when
// the message was sent; with detail, their names.
struct status_report {
  message_status status = message_status::sent;
  std::uint32_t recipients = 0;
  std::uint32_t delivered = 0;  // read included
  std::uint32_t read = 0;
  std::vector<std::string> delivered_to;  // detail only
  std::vector<std::string> read_by;       // detail only
};

// Where a device stands in one of its chats.
struct chat_position {
  chat_id chat = 0;
  std::uint64_t cursor = 0;  // the device has everything up to here
  std::uint64_t head = 0;    // the chat's last seq
  // Set by a store that checked (cursor, head] and found only this device's own entries: the
  // caller moves the cursor to head without reading them. A store may leave it false (the
  // caller then reads them and finds nothing to send).
  bool own_only = false;
};

// What a device must be sent after it authenticates.
//  - behind: every chat with a message from another device above this device's cursor; it
//    may also list chats with nothing above the cursor but the device's own messages
//    (own_only says so where the store checked), or nothing at all (the caller skips those).
//  - marks: the current watermarks (those above 0) of the other members in every chat where
//    one moved after `receipts_since`; in all the user's chats if that is 0 or a stamp
//    the store cannot answer for (it may list more than moved, never fewer).
//  - stamp: every watermark that moved after `receipts_since` and up to it is in `marks`;
//    later moves reach the device as receipts of ack() or mark_read() completed after this
//    call began (parley.v2.QueueEmpty.receipts_stamp). A stamp is a write's sequence number:
//    each request that returns receipts has its own (watermark.stamp), increasing in commit
//    order.
struct device_backlog {
  std::vector<chat_position> behind;
  std::vector<watermark> marks;
  std::uint64_t stamp = 0;
};

struct history_page {
  chat_id chat = 0;
  std::vector<chat_message> messages;  // newest first
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

// Media records (one per blob an upload slot was granted for; docs/architecture.md, "Media").
struct media_request {
  user_id owner = 0;
  std::string media;          // a fresh media::new_blob_id()
  std::uint64_t size = 0;     // ciphertext bytes declared
  std::uint64_t quota = 0;    // the most bytes one account may hold; 0: no quota
};

struct media_record {
  std::string media;
  user_id owner = 0;
  std::uint64_t size = 0;
  std::uint64_t created_ms = 0;
  std::uint64_t references = 0;
  // The S3 multipart upload bound to the slot (bind_upload), or empty: the one upload whose
  // parts the server signs URLs for, and which the sweep aborts with the record.
  std::string upload_id;
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

  // The first of `usernames`, in their order, that has no account; "" if every one has. One
  // read: what CreateGroup's UNKNOWN_USER names (Error.subject).
  virtual void first_unknown_user(std::vector<std::string> usernames,
                                  completion<std::string> done) = 0;

  // Appends a message to the chat's log once per (sender_device, client_msg_id): a retry
  // within the dedupe window returns the first result. errc::unknown_user if the peer does
  // not exist, errc::self_message if it is the sender, errc::not_found for a chat id the
  // sender is not a member of, errc::invalid_argument for a cipher type the chat does not
  // take (see send_request::to).
  virtual void send(send_request request, completion<send_outcome> done) = 0;

  // Moves the device's delivery cursors (never back). All or nothing: errc::not_found if the
  // user is not a member of one of the chats (a former group member may ack up to the event
  // that removed it), errc::invalid_argument if a seq is above its chat's head. For each 1:1
  // chat in which the user's delivered watermark (the highest cursor of the user's devices)
  // moved, a receipt for every device of the other member; each such group in `groups`.
  virtual void ack(device_id device, user_id user, std::vector<cursor_update> cursors,
                   completion<watermark_moves> done) = 0;

  // Moves the device's cursors (never back) over entries the caller found to be all the
  // device's own (a drain: chat_position::own_only, or what it read; the store does not check
  // that). All or nothing, with ack()'s errors; the watermarks move as by ack(), but nothing
  // is returned to push: such a move tells the other members nothing they have not had.
  // Cheaper than ack() where it runs SQL: one statement, whatever the number of chats.
  virtual void pass_own_entries(device_id device, user_id user, std::vector<cursor_update> cursors,
                                completion<void> done) = 0;

  // Moves the reader's read mark in the chat to up_to (never back). errc::not_found if the
  // reader is not a member, errc::invalid_argument if up_to is above the head. If it moved:
  // READ receipts for every device of the other member (1:1), or the group in `groups`.
  virtual void mark_read(user_id reader, chat_id chat, std::uint64_t up_to,
                         completion<watermark_moves> done) = 0;

  // A group's merged receipts (a write, for its stamp): for each member whose view of the
  // group's watermarks moved since the last call for it, a receipt per device, mark.user
  // empty: the lowest delivered (read counts as delivered) and the lowest read watermark of
  // every other current member. Nothing if none moved or it is no group.
  virtual void group_receipts(chat_id chat, completion<std::vector<receipt_delivery>> done) = 0;

  // Groups. create_group: errc::unknown_user for a member that does not exist,
  // errc::group_full past max_members; a client_request_id the device used within the dedupe
  // window: the group it created (duplicate), errc::not_found if the creator has left it since,
  // errc::invalid_argument if the id named a message instead. change_group: errc::not_found if the actor is not a
  // member (or the chat is no group), errc::not_admin, errc::not_member,
  // errc::already_member, errc::group_full, errc::unknown_user, errc::invalid_argument
  // (removing oneself: leave instead; demoting the last admin). All or nothing.
  virtual void create_group(create_group_request request, completion<group_outcome> done) = 0;
  virtual void change_group(group_change_request request, completion<group_outcome> done) = 0;
  // errc::not_found unless `requester` is a member of the group.
  virtual void get_group(user_id requester, chat_id chat, completion<group_info> done) = 0;

  // What the device must be sent after it authenticates (see device_backlog), given the
  // receipts stamp its client kept (parley.v2.Authenticate.receipts_since; 0 for none).
  // Stamps grow with every write that returns receipts; ack() and mark_read() set each
  // receipt's watermark.stamp.
  virtual void backlog(device_id device, user_id user, std::uint64_t receipts_since,
                       completion<device_backlog> done) = 0;

  // The device's delivery cursor in the chat as committed (0 if it has none): what a cluster
  // node checks a chat's first push on a connection against (device_session). It may lag an
  // ack being committed, never lead it.
  virtual void device_cursor(device_id device, user_id user, chat_id chat,
                             completion<std::uint64_t> done) = 0;

  // Up to `limit` entries of the chat's log with after < seq <= up_to, oldest first, and at
  // most `max_bytes` of payload (at least one entry).
  virtual void read_log(chat_id chat, std::uint64_t after, std::uint64_t up_to, std::size_t limit,
                        std::size_t max_bytes, completion<std::vector<shared_message>> done) = 0;

  // Status of the message at (chat, seq), which `requester` must have sent; errc::not_found
  // for any other. Read if every other member's read mark is at or above it, delivered if
  // every other member's delivered watermark is (over the members counted: status_report).
  virtual void status(user_id requester, chat_id chat, std::uint64_t seq, bool detail,
                      completion<status_report> done) = 0;

  // The chat's entries with seq < before (0: no bound), newest first, at most `limit` of them
  // and at most `max_bytes` of payload (at least one). errc::not_found if the requester is not
  // a member; a 1:1 chat named by a peer that has no message yet is an empty page.
  virtual void history(user_id requester, chat_ref chat, std::uint64_t before, std::size_t limit,
                       std::size_t max_bytes, completion<history_page> done) = 0;

  // Stores a device's public keys (see parley.v2.UploadKeys for the rules). Fails with
  // errc::missing_signed_prekey if the first upload or a new identity comes without a signed
  // prekey, errc::too_many_prekeys if the device would hold more than `max_held` one-time
  // prekeys; nothing is stored then. One-time prekeys with an id already held replace it.
  virtual void upload_keys(key_upload upload, std::size_t max_held, completion<key_stock> done) = 0;

  // One bundle per device of the user that has keys, each taking (removing) the device's
  // oldest one-time prekey when `take_one_time`; without it the bundles carry none and
  // nothing is written. errc::unknown_user, or errc::no_keys if no device has keys.
  virtual void take_key_bundles(std::string username, bool take_one_time,
                                completion<std::vector<key_bundle>> done) = 0;

  // For each of `usernames`, whether it and `requester` share a chat (a 1:1 chat, created by
  // its first message). Unknown users are false. Presence and typing pass only between users
  // who do.
  virtual void shared_chats(user_id requester, std::vector<std::string> usernames,
                            completion<std::vector<bool>> done) = 0;

  // Media. create_media records a blob before its upload slot is handed out; its size counts
  // against the owner's quota from then on: errc::quota_exceeded (nothing recorded) if the
  // owner would hold more than request.quota bytes. Answers the bytes the owner holds after it.
  virtual void create_media(media_request request, completion<std::uint64_t> done) = 0;
  // The record of the blob the log entry (chat, seq) references, for `requester`: a current
  // member of the chat that joined at or before seq. errc::not_found otherwise, and for an
  // entry without media.
  virtual void media_of(user_id requester, chat_id chat, std::uint64_t seq,
                        completion<media_record> done) = 0;
  // The record of blob `media` if `owner` holds it (created it with create_media);
  // errc::media_not_found otherwise (no such record, or another account's).
  virtual void own_media(user_id owner, std::string media, completion<media_record> done) = 0;
  // Binds the multipart upload `upload_id` (non-empty) to owner's record of blob `media`
  // unless one is bound already, and answers the upload bound: `upload_id`, or the one bound
  // before (then nothing is written). errc::media_not_found as own_media. So a slot has at most
  // one multipart upload whose parts the server signs, whatever its start URL was used for.
  virtual void bind_upload(user_id owner, std::string media, std::string upload_id,
                           completion<std::string> done) = 0;
  // Up to `limit` records with no reference created before `created_before_ms` (the sweep's
  // candidates), oldest first.
  virtual void unreferenced_media(std::uint64_t created_before_ms, std::size_t limit,
                                  completion<std::vector<media_record>> done) = 0;
  // Deletes the records among `media` that still have no reference and were created before
  // `created_before_ms` (a send may have referenced one since it was listed), and gives their
  // bytes back to their owners' quotas. Answers the ids deleted: only their blobs may go.
  virtual void delete_media(std::vector<std::string> media, std::uint64_t created_before_ms,
                            completion<std::vector<std::string>> done) = 0;
  // For each id, whether a record exists (the orphan sweep: a blob without one is removed).
  virtual void media_exists(std::vector<std::string> media, completion<std::vector<bool>> done) = 0;

  // Stores the user's privacy setting (a write).
  virtual void set_privacy(user_id user, bool hide_last_seen, completion<void> done) = 0;

  // The store's state as of its last write or check. Thread-safe; never blocks on I/O.
  virtual store_health health() = 0;

  // Requests waiting for the writer (for metrics).
  virtual std::uint64_t pending_writes() = 0;

  // Finishes queued work, then refuses new work with errc::shutting_down. Idempotent.
  virtual void stop() = 0;
};

}  // namespace parley::store
