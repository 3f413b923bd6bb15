// The device's local store: one SQLite database in the profile (local.db), readable and
// writable only by the user (0600), holding the Signal-protocol state (identity and prekeys
// with their private keys, sessions, the identity keys of contacts and their changes) and the
// local message history, which only this device can read: the server keeps ciphertext only.
//
// The history follows the chat log of protocol v2: every message carries its chat_id and its
// per-chat seq (from its Envelope, or for a sent one from its SendResult); each peer maps to
// the 1:1 chat with them; and the other member's delivered and read watermarks are kept per
// (chat, peer), from which each sent message's status is derived. With them, the receipts
// stamp the device kept from its last session (client::receipts_stamp_tracker), presented as
// Authenticate.receipts_since so that the server sends only the watermarks that moved since.
//
// Groups (schema 4): a group is a chat too, and its messages are in the same history, each with
// its sender as peer (this account for its own) and the group's system messages (events) among
// them. A group's receipts carry no user: they are the lowest watermark of all the other
// members, kept under the peer "" of the chat, from which a sent group message's status is
// derived. Besides, for groups: the sender keys (e2ee::key_store), which members hold this
// device's current sender key, the groups this device knows of (chat_id, name, whether it is
// still a member), and the group messages whose sender key has not arrived yet (kept as
// ciphertext until it does).
//
// Durability: synchronous=FULL in WAL mode, so a committed transaction survives a crash; the
// messenger commits a decrypted message and the ratchet state it advanced together, and acks
// to the server only after that commit.
//
// Schema: PRAGMA user_version holds schema_version. An older database is migrated in place when
// opened, in one transaction. One of the first format (user_version 0, from a parley of
// protocol v1): its messages keep chat_id 0 and seq 0 (unknown: the old protocol had neither)
// and show as stored, status unknown; keys, sessions and identities are kept as they are. One
// of version 2 (before receipts stamps) gets the receipts_stamps table, empty: its next session
// presents 0 and gets every current watermark, as before. One of version 2 or 3 (before groups)
// gets the group tables, empty, and every message it holds stays a 1:1 text message. A database with a newer version than
// this parley knows is refused (std::runtime_error saying so), never written to.
//
// Failures of SQLite itself throw std::runtime_error (a broken disk is not a message-path
// value); the engine turns them into e2ee::errc::storage.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "e2ee/key_store.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace parley::client {

enum class message_direction { incoming, outgoing };

// A sent message's status, derived from the peer's watermarks (read implies delivered).
// unknown: an incoming message, or one stored before chats had ids (no seq to compare).
enum class message_status { unknown, sent, delivered, read };

// What a history entry is. text: a message someone wrote (readable, or undecryptable with its
// problem). event: a group's system message (a change of the group); `text` describes it and
// `peer` is who made it ("" for the server). control: a message that carries nothing to show
// (a sender key sent in a 1:1 chat), kept only so that a repeated push of it is known; never
// listed by the history.
enum class message_kind { text = 0, event = 1, control = 2 };

struct local_message {
  std::uint64_t server_id = 0;  // the server's message id (0: not yet sent)
  std::uint64_t chat_id = 0;    // 0: unknown (stored by a parley of protocol v1)
  std::uint64_t seq = 0;        // position in the chat's log; 0 with chat_id 0
  // The 1:1 chat's other member; in a group, the sender (this account for its own messages).
  std::string peer;
  message_direction direction = message_direction::incoming;
  std::uint64_t sent_at_ms = 0;
  std::string text;     // empty when undecryptable
  std::string problem;  // why it could not be decrypted; empty for a readable message
  message_kind kind = message_kind::text;
  // Filled when read back (history, message, last_sent_up_to); ignored by add_message.
  message_status status = message_status::unknown;
};

// A message's file (parley.content.v1.Media, serialized): what `parley download` needs.
struct local_media {
  std::uint64_t server_id = 0;
  std::uint64_t chat_id = 0;
  std::uint64_t seq = 0;
  std::string content;
};

// The other member's watermarks in a chat: every message of this account with seq <=
// delivered_seq is delivered, with seq <= read_seq read.
struct watermarks {
  std::uint64_t delivered_seq = 0;
  std::uint64_t read_seq = 0;
};

// A group this device knows of. `name` is "" until an event or a GroupInfo names it.
struct local_group {
  std::uint64_t chat_id = 0;
  std::string name;
  bool member = true;  // false once this account was removed from it or left it
};

// Who has (or may have) this device's sender key for a group: the key's id when it was sent to
// the member, and the seq at which the member had joined then (a member removed and added
// again has another: it gets the key again, after a rotation). A holder is recorded before the
// key is sent (delivered false) and confirmed once the server has stored it (delivered true):
// a send cut short leaves an unconfirmed holder, which still counts as having the key when a
// removal decides whether to rotate, and is sent the key again before the next message.
struct key_holder {
  std::uint32_t key_id = 0;
  std::uint64_t joined_seq = 0;
  bool delivered = false;
};

// A group message kept until its sender key arrives (its SenderKeyMessage, as pushed).
struct pending_group_message {
  std::uint64_t server_id = 0;
  std::uint64_t chat_id = 0;
  std::uint64_t seq = 0;
  std::string sender;
  std::int32_t device = 0;
  std::uint64_t sent_at_ms = 0;
  std::string payload;
};

class local_store final : public e2ee::key_store {
 public:
  explicit local_store(const std::filesystem::path& file);
  ~local_store() override;
  local_store(const local_store&) = delete;
  local_store& operator=(const local_store&) = delete;

  // BEGIN IMMEDIATE ... COMMIT; rolled back if destroyed without commit(). Not nested.
  class transaction {
   public:
    explicit transaction(local_store& store);
    ~transaction();
    void commit();

   private:
    local_store& store_;
    bool done_ = false;
  };

  // e2ee::key_store
  std::optional<std::string> meta(std::string_view key) override;
  void set_meta(std::string_view key, std::string_view value) override;
  std::optional<std::string> prekey(std::uint32_t id) override;
  void put_prekey(std::uint32_t id, std::string_view record) override;
  void remove_prekey(std::uint32_t id) override;
  void remove_all_prekeys() override;
  std::optional<std::string> signed_prekey(std::uint32_t id) override;
  void put_signed_prekey(std::uint32_t id, std::string_view record,
                         std::uint64_t created_ms) override;
  void remove_signed_prekey(std::uint32_t id) override;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> signed_prekeys() override;
  std::optional<std::string> session(std::string_view peer, std::int32_t device) override;
  void put_session(std::string_view peer, std::int32_t device, std::string_view record) override;
  void remove_session(std::string_view peer, std::int32_t device) override;
  std::size_t remove_sessions(std::string_view peer) override;
  std::vector<std::int32_t> session_devices(std::string_view peer) override;
  std::optional<std::string> identity(std::string_view peer) override;
  void put_identity(std::string_view peer, std::string_view key, std::uint64_t now_ms) override;
  std::vector<e2ee::identity_change> take_unseen_identity_changes() override;
  std::optional<std::string> sender_key(std::string_view group, std::string_view sender,
                                        std::int32_t device) override;
  void put_sender_key(std::string_view group, std::string_view sender, std::int32_t device,
                      std::string_view record) override;
  void remove_sender_key(std::string_view group, std::string_view sender,
                         std::int32_t device) override;
  std::size_t remove_sender_keys(std::string_view group) override;

  // Every identity change recorded for `peer`, oldest first (shown or not).
  std::vector<e2ee::identity_change> identity_changes(std::string_view peer);
  std::size_t prekey_count();

  // History. A message with a server id is stored once: false if it was already there.
  // A non-zero chat_id that is not a known group also records the peer's 1:1 chat (set_chat):
  // record a group (set_group) before its first message.
  bool add_message(const local_message& m);
  bool has_message(std::uint64_t server_id);

  // Media: the file a message carries (kept with the message, in the same transaction), and
  // the state of an upload in progress, by the source file's path, size and modification time
  // (a file changed since is a new upload).
  void put_media(std::uint64_t server_id, std::uint64_t chat_id, std::uint64_t seq,
                 std::string_view content);
  std::optional<local_media> media(std::uint64_t server_id);
  // A group event (parley.v2.GroupEvent, serialized) kept with its system message, so that the
  // history shows it as sync did; nullopt for one received before this was kept (version < 6).
  void put_group_event(std::uint64_t server_id, std::string_view event);
  std::optional<std::string> group_event(std::uint64_t server_id);
  void put_upload(const std::string& source, std::uint64_t size, std::int64_t mtime_ns,
                  std::string_view state);
  std::optional<std::string> upload(const std::string& source, std::uint64_t size,
                                    std::int64_t mtime_ns);
  void forget_upload(const std::string& source);
  // The message with this server id, with its status; nullopt if it is not in the history.
  std::optional<local_message> message(std::uint64_t server_id);
  // The newest `limit` messages of the 1:1 chat with `peer`, oldest first, with their statuses
  // (no group messages, no control messages).
  std::vector<local_message> history(std::string_view peer, std::size_t limit);
  // The newest `limit` entries of chat `chat_id` (a group: messages and events), oldest first,
  // in the chat's order, with their statuses; no control messages.
  std::vector<local_message> chat_history(std::uint64_t chat_id, std::size_t limit);
  // The text message with the highest seq received from `peer` in the chat with them (what
  // `read` marks as read up to); nullopt if none.
  std::optional<local_message> last_received(std::string_view peer);
  // The entry with the highest seq received in chat `chat_id` (a message or an event, not a
  // control message): what `read GROUP` marks as read up to; nullopt if none.
  std::optional<local_message> last_received_in(std::uint64_t chat_id);
  // This account's text message with the highest seq <= up_to_seq in `chat_id`; nullopt if
  // none.
  std::optional<local_message> last_sent_up_to(std::uint64_t chat_id, std::uint64_t up_to_seq);

  // Groups. set_group records a group (a member of it); a non-empty name replaces the known
  // one, an empty one keeps it. set_group_member records that this account is (again) or no
  // longer a member.
  void set_group(std::uint64_t chat_id, std::string_view name);
  void set_group_member(std::uint64_t chat_id, bool member);
  std::optional<local_group> group(std::uint64_t chat_id);
  bool is_group(std::uint64_t chat_id);
  // The groups of that name (names are not unique), oldest chat first; all with "".
  std::vector<local_group> groups_named(std::string_view name);
  std::vector<local_group> groups();

  // Who holds this device's current sender key of a group (see key_holder).
  std::map<std::string, key_holder> sender_key_holders(std::uint64_t chat_id);
  void add_sender_key_holder(std::uint64_t chat_id, std::string_view member,
                             const key_holder& holder);
  // After a rotation (or leaving): nobody holds the new key yet.
  void forget_sender_key_holders(std::uint64_t chat_id);

  // Group messages waiting for their sender key. Stored once per server id: false if it was
  // there already.
  bool add_pending(const pending_group_message& m);
  bool has_pending(std::uint64_t server_id);
  // Those of one sender's device in a group, in the chat's order.
  std::vector<pending_group_message> pending_from(std::uint64_t chat_id, std::string_view sender,
                                                  std::int32_t device);
  // All of a group, in the chat's order.
  std::vector<pending_group_message> pending_in(std::uint64_t chat_id);
  void remove_pending(std::uint64_t server_id);

  // The 1:1 chat with each peer, as the server named it (SendResult, Envelope). A peer has one
  // chat and a chat one peer: a new pairing replaces an old one.
  void set_chat(std::string_view peer, std::uint64_t chat_id);
  std::optional<std::uint64_t> chat_of(std::string_view peer);

  // A Receipt: raises `peer`'s delivered (status delivered) or read (status read) watermark in
  // `chat_id` to up_to_seq, as a maximum. True if it moved; false if it was already there (or
  // `status` is neither).
  bool raise_watermark(std::uint64_t chat_id, std::string_view peer, message_status status,
                       std::uint64_t up_to_seq);
  watermarks watermarks_of(std::uint64_t chat_id, std::string_view peer);

  // The receipts stamp device `device_id` kept from its last session, 0 if none: what its next
  // Authenticate presents as receipts_since. Kept per device id, so that a local.db later used
  // with other credentials presents nothing of another device's.
  std::uint64_t receipts_stamp(std::uint64_t device_id);
  // Raises that stamp to `stamp` (as unsigned 64-bit numbers); never lowers it, since another
  // parley process on the same profile may have kept a higher one. True if it moved. Call only
  // once the receipts it covers are in this store (receipts_stamp_tracker says when).
  bool raise_receipts_stamp(std::uint64_t device_id, std::uint64_t stamp);

  // The format this code writes, in PRAGMA user_version (see the top of this file).
  static constexpr int schema_version = 6;

 private:
  void migrate();
  class statement;
  statement prepare(const char* sql);
  void exec(const char* sql);

  sqlite3* db_ = nullptr;
  std::filesystem::path file_;
  std::unordered_map<std::string, sqlite3_stmt*> statements_;  // SQL text -> prepared
};

}  // namespace parley::client
